fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "../proto/common.proto",
            "../proto/coupon.proto",
            "../proto/point.proto",
            "../proto/timesale.proto",
        ],
        &["../proto"],
    )?;
    println!("cargo:rerun-if-changed=../proto");
    Ok(())
}
