use promoctl::error::CtlError;
use std::process::ExitCode;

// `promoctl load` allocates per request like the server it loads; glibc's
// malloc was a fifth of its CPU at 18,000 requests/s, CPU the server under
// test shares on a small host.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli =
        promoctl::cli::Cli::try_parse_with_file(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match promoctl::commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                // The report already said what failed.
                CtlError::CheckFailed(_) | CtlError::ThresholdsBroken(_) => {}
                CtlError::Refused(b) if b.status == 401 => {
                    eprintln!(
                        "promoctl: {e:#}\npromoctl: hint: `promoctl login` stores a fresh token"
                    )
                }
                e => eprintln!("promoctl: {e:#}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}
