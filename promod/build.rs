fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(
        &[
            "../proto/common.proto",
            "../proto/audit.proto",
            "../proto/coupon.proto",
            "../proto/point.proto",
            "../proto/timesale.proto",
        ],
        &["../proto"],
    )?;
    println!("cargo:rerun-if-changed=../proto");
    // `sqlx::migrate!` embeds the migration files; a new one must rebuild.
    println!("cargo:rerun-if-changed=../migrations");
    Ok(())
}
