use promoctl::error::CtlError;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli =
        promoctl::cli::Cli::try_parse_with_file(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match promoctl::commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                // The report already said what failed.
                CtlError::CheckFailed(_) => {}
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
