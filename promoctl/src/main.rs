//! promoctl: the promo ops CLI.

mod dashboard;
mod load;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "promoctl", version, about = "The promo ops CLI")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open- or closed-loop load against the gateway, with HDR percentiles.
    Load(load::LoadArgs),
    /// A live terminal view of roles, routes, breakers, stock and the outbox.
    Dashboard(dashboard::DashboardArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Load(args) => match load::run(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("promoctl: {e:#}");
                3
            }
        },
        Command::Dashboard(args) => match dashboard::run(args).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("promoctl: {e:#}");
                3
            }
        },
    };
    std::process::exit(code);
}
