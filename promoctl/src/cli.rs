//! The command line: `promoctl <noun> <verb>`.

use crate::output::Format;
use crate::time::parse_time;
use chrono::{DateTime, Utc};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use uuid::Uuid;

const EXAMPLES: &str = "\
Examples:
  promoctl login --email admin@promo.local --password admin-password
  promoctl policy create --name 'Spring 10%' --discount-type percentage --discount-value 10 \\
      --total-quantity 1000 --valid-until +7d
  promoctl policy list -o json
  promoctl coupon issue --policy 0190...
  promoctl code generate --policy 0190... --count 100000 --out codes.csv
  promoctl coupon redeem --code SPRING-10
  promoctl sale create --product 0190... --total-quantity 100 --sale-price 900 --start +5m --end 2h
  promoctl check --coupon --point
  promoctl events tail --type coupon.issued -o json
  promoctl config use-context staging
  promoctl completion bash > /etc/bash_completion.d/promoctl

Settings: flag > PROMOCTL_* env > the config file's context > default (`promoctl config --help`).
Exit codes: 0 ok, 1 refused by the server (or a check failed), 2 usage, 3 unreachable,
4 a `load` threshold broken.
Times: `now`, `+5m`, `-1h`, `2h` (all from now) or RFC 3339.";

#[derive(Debug, Parser)]
#[command(name = "promoctl", version, about = "The promo ops CLI", after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and merges `load --file` under it: only
    /// clap's matches know which flags were typed, since a flag at its
    /// default value looks the same as one typed at that value.
    pub fn try_parse_with_file<I, T>(argv: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = Cli::command();
        let matches = cmd.try_get_matches_from_mut(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        if let (Command::Load(args), Some(("load", sub))) = (&mut cli.command, matches.subcommand())
        {
            if let Err(e) = crate::load::file::apply(args, sub) {
                let load = cmd
                    .find_subcommand_mut("load")
                    .expect("load is a subcommand");
                return Err(load.error(clap::error::ErrorKind::ValueValidation, format!("{e:#}")));
            }
        }
        Ok(cli)
    }
}

#[derive(Debug, Args)]
pub struct Global {
    /// Gateway base URL [default: http://127.0.0.1:4000]
    #[arg(long, global = true, env = "PROMOCTL_GATEWAY_URL", alias = "gateway")]
    pub gateway_url: Option<String>,
    /// A PEM file of CA certificates to trust, besides the system's, for an
    /// https gateway (and the dashboard's role urls)
    #[arg(long, global = true, env = "PROMOCTL_CERTIFICATE_AUTHORITY")]
    pub certificate_authority: Option<PathBuf>,
    /// The config file's context to use instead of its current_context
    #[arg(long, global = true, env = "PROMOCTL_CONTEXT")]
    pub context: Option<String>,
    /// Output format [default: table; text for `events tail`]
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Format>,
    /// Tables without their header row (and a page without its footer)
    #[arg(long, global = true)]
    pub no_headers: bool,
    /// Idempotency-Key of the write [default: a fresh UUID per invocation]
    #[arg(long, global = true)]
    pub idempotency_key: Option<String>,
    /// Login email used when no valid token is stored
    #[arg(long = "as-email", global = true, env = "PROMOCTL_EMAIL", hide = true)]
    pub as_email: Option<String>,
    /// Login password used when no valid token is stored
    #[arg(
        long = "as-password",
        global = true,
        env = "PROMOCTL_PASSWORD",
        hide = true,
        hide_env_values = true
    )]
    pub as_password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in and store the tokens in the config dir (0600)
    Login(LoginArgs),
    /// Forget the stored tokens
    Logout,
    /// Users (register)
    #[command(subcommand)]
    User(UserCmd),
    /// Coupon policies
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl policy create --name 'Spring' --discount-type fixed --discount-value 500 \\
      --total-quantity 1000 --per-user-limit 2 --valid-from +1h --valid-until 2026-12-31T23:59:59Z
  promoctl policy create --name 'Spring code' --discount-type fixed --discount-value 500 \\
      --total-quantity 1000 --valid-until +7d --code-mode shared --shared-code SPRING-10
  promoctl policy create --name 'Mailing' --discount-type percentage --discount-value 10 \\
      --total-quantity 100000 --valid-until +30d --code-mode batch --stackable
  promoctl policy list --page 2 --size 50
  promoctl policy update ID --total-quantity 2000 --active false"
    )]
    Policy(PolicyCmd),
    /// Coupons
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl coupon issue --policy ID
  promoctl coupon issue --policy ID --user USER_ID    # admin, for another user
  promoctl coupon use ID --order-id o-123 --order-amount 25000
  promoctl coupon reserve ID --order-id o-123 --order-amount 25000 --hold-seconds 600
  promoctl coupon redeem --code SPRING-10             # a SHARED or BATCH policy's code
  promoctl coupon redeem --code K7QM-X4TP-2ZR --user USER_ID   # admin, for another user
  promoctl coupon cancel ID                          # also releases a reservation
  promoctl coupon list --status AVAILABLE -o json
  promoctl coupon list --policy ID --status USED       # admin: every user's
  promoctl coupon list --user USER_ID                  # admin: one user's"
    )]
    Coupon(CouponCmd),
    /// Coupon codes of BATCH policies: generate, list, export
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl code generate --policy ID --count 100000 --prefix SPRING
  promoctl code generate --policy ID --count 1000000 --out codes.csv   # then download them
  promoctl code list --policy ID --status UNREDEEMED
  promoctl code export --policy ID > codes.csv
  promoctl code export --policy ID --out codes.csv                     # with a progress bar"
    )]
    Code(CodeCmd),
    /// Points
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl point earn --user USER_ID --amount 1000 --reference signup
  promoctl point use --amount 300
  promoctl point cancel TRANSACTION_ID
  promoctl point balance --user USER_ID
  promoctl point history --type EARN
  promoctl point hold create --amount 300 --hold-seconds 600 --reference cart-1
  promoctl point hold capture HOLD_ID --amount 200   # the rest is released
  promoctl point hold void HOLD_ID
  promoctl point hold get HOLD_ID"
    )]
    Point(PointCmd),
    /// Products
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl product create --name 'Headphones' --price 120000
  promoctl product list"
    )]
    Product(ProductCmd),
    /// Time sales
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl sale create --product ID --total-quantity 100 --sale-price 90000 \\
      --per-user-limit 2 --start +5m --end 2h
  promoctl sale list --status ACTIVE
  promoctl sale update ID --end +30m
  promoctl sale update ID --cancel"
    )]
    Sale(SaleCmd),
    /// Time-sale orders
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl order create --sale ID --quantity 1
  promoctl order create --sale ID --quantity 1 --hold --hold-seconds 600
  promoctl order confirm ID
  promoctl order cancel ID
  promoctl order list
  promoctl order list --sale ID --status PENDING       # admin: every user's
  promoctl order list --user USER_ID                   # admin: one user's"
    )]
    Order(OrderCmd),
    /// The audit log of admin writes, across every role (admin)
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl audit list
  promoctl audit list --action coupon_policy.updated --since -24h
  promoctl audit list --target POLICY_ID -o json     # a policy's history, before and after
  promoctl audit list --actor ADMIN_ID --since 2026-12-01T00:00:00Z --until 2026-12-02T00:00:00Z"
    )]
    Audit(AuditCmd),
    /// Verify the invariants in PostgreSQL and Redis
    Check(crate::check::CheckArgs),
    /// Watch events
    #[command(subcommand)]
    Events(EventsCmd),
    /// Load the gateway (open or closed loop) and report HDR percentiles
    Load(Box<crate::load::LoadArgs>),
    /// A live terminal view of roles, routes, stock, points and the outbox
    Dashboard(crate::dashboard::DashboardArgs),
    /// Redis counters: seed them from PostgreSQL, or show them next to it
    #[command(
        subcommand,
        after_help = "\
Examples:
  promoctl inventory seed SALE_OR_POLICY_ID
  promoctl inventory seed --all
  promoctl inventory seed SALE_ID --force   # overwrite a live counter
  promoctl inventory show"
    )]
    Inventory(InventoryCmd),
    /// The config file: contexts like kubeconfig's
    #[command(
        subcommand,
        after_help = "\
Every setting is a flag, a PROMOCTL_* env var and a key of
$PROMOCTL_CONFIG_DIR/config.toml (default ~/.config/promoctl) of the same name:
--gateway-url, PROMOCTL_GATEWAY_URL, gateway_url. Flags win over env, env over the file.

  gateway_url = \"http://127.0.0.1:4000\"     # shared by every context
  current_context = \"local\"
  [contexts.local]
  redis_url = \"redis://127.0.0.1:6379\"
  [contexts.staging]
  gateway_url = \"https://promo.staging.example\"
  coupon_database_url = \"postgres://ops@db.staging.example/coupon_db\"

Examples:
  promoctl config get-contexts
  promoctl config use-context staging
  promoctl --context local policy list
  promoctl config view -o yaml"
    )]
    Config(ConfigCmd),
    /// Print a shell completion script
    #[command(after_help = "\
Examples:
  source <(promoctl completion bash)
  promoctl completion zsh > \"${fpath[1]}/_promoctl\"
  promoctl completion fish > ~/.config/fish/completions/promoctl.fish")]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one per command into a directory
    #[command(after_help = "\
Examples:
  promoctl man | man -l -
  promoctl man --out-dir /usr/local/share/man/man1")]
    Man {
        /// Write promoctl.1 and a page per subcommand (promoctl-policy.1, ...) here
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Make a context of the config file the current one
    UseContext { name: String },
    /// The context in force (`--context`, else the file's current_context)
    CurrentContext,
    /// The contexts of the config file
    GetContexts,
    /// The settings in force, after flags, env, the context and defaults
    View,
}

#[derive(Debug, Subcommand)]
pub enum InventoryCmd {
    /// Load stock and admission counters from PostgreSQL; a live counter is
    /// kept unless --force
    Seed {
        /// A time-sale or coupon-policy id
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<Uuid>,
        /// Every sale and policy
        #[arg(long)]
        all: bool,
        /// Overwrite live counters (only on a quiet system)
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        stores: crate::check::Stores,
    },
    /// Live Redis counters next to PostgreSQL's numbers
    Show {
        #[command(flatten)]
        stores: crate::check::Stores,
    },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[arg(long, env = "PROMOCTL_EMAIL")]
    pub email: Option<String>,
    /// Read from stdin when not given
    #[arg(long, env = "PROMOCTL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

#[derive(Debug, Args)]
pub struct PageArgs {
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub size: u32,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Register a user; `--admin` then promotes it in gateway_db
    #[command(after_help = "\
The first admin comes from promod's configuration: PROMO_BOOTSTRAP_ADMIN_EMAIL and
PROMO_BOOTSTRAP_ADMIN_PASSWORD. Later admins: `promoctl user create --admin` registers
through the API, then sets users.role = 'admin' directly in gateway_db
(--database-url, PROMOCTL_GATEWAY_DATABASE_URL, or the default local gateway_db).")]
    Create(UserCreate),
}

#[derive(Debug, Args)]
pub struct UserCreate {
    #[arg(long)]
    pub email: String,
    /// At least 8 characters
    #[arg(long, env = "PROMOCTL_NEW_USER_PASSWORD", hide_env_values = true)]
    pub password: String,
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub admin: bool,
    /// gateway_db, for `--admin`
    #[arg(
        long = "gateway-database-url",
        alias = "database-url",
        env = "PROMOCTL_GATEWAY_DATABASE_URL"
    )]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DiscountType {
    Fixed,
    Percentage,
}

impl DiscountType {
    pub fn api(self) -> &'static str {
        match self {
            DiscountType::Fixed => "FIXED",
            DiscountType::Percentage => "PERCENTAGE",
        }
    }
}

/// How a policy hands out its coupons (API.md, "Coupon codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodeMode {
    /// Issued by policy id (`coupon issue`), each with a code of its own
    Generated,
    /// Redeemed with one public code (`--shared-code`)
    Shared,
    /// Redeemed with single-use codes generated ahead (`code generate`)
    Batch,
}

impl CodeMode {
    pub fn api(self) -> &'static str {
        match self {
            CodeMode::Generated => "GENERATED",
            CodeMode::Shared => "SHARED",
            CodeMode::Batch => "BATCH",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create a coupon policy (admin)
    Create(PolicyCreate),
    List(PageArgs),
    Get {
        id: Uuid,
    },
    /// Change a policy (admin)
    Update(PolicyUpdate),
}

#[derive(Debug, Args)]
pub struct PolicyCreate {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long, value_enum)]
    pub discount_type: DiscountType,
    #[arg(long)]
    pub discount_value: i64,
    #[arg(long)]
    pub min_order_amount: Option<i64>,
    #[arg(long)]
    pub max_discount_amount: Option<i64>,
    #[arg(long)]
    pub total_quantity: i64,
    #[arg(long)]
    pub per_user_limit: Option<i64>,
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true, default_value = "now")]
    pub valid_from: DateTime<Utc>,
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    pub valid_until: DateTime<Utc>,
    /// How its coupons are handed out [server default: generated]
    #[arg(long, value_enum)]
    pub code_mode: Option<CodeMode>,
    /// The public code of a shared policy: 4-32 characters of A-Z, 0-9 and -
    #[arg(long, required_if_eq("code_mode", "shared"))]
    pub shared_code: Option<String>,
    /// Its coupons may share an order with other stackable coupons
    #[arg(long)]
    pub stackable: bool,
}

#[derive(Debug, Args)]
pub struct PolicyUpdate {
    pub id: Uuid,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub total_quantity: Option<i64>,
    #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
    pub valid_until: Option<DateTime<Utc>>,
    #[arg(long)]
    pub active: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum CouponCmd {
    /// Issue a coupon of a policy (admins may pass --user)
    Issue {
        #[arg(long)]
        policy: Uuid,
        #[arg(long)]
        user: Option<Uuid>,
    },
    /// Use a coupon on an order
    Use {
        id: Uuid,
        #[arg(long)]
        order_id: String,
        #[arg(long)]
        order_amount: i64,
    },
    /// Hold a coupon for an order; `coupon use` with the same order confirms
    /// it, `coupon cancel` releases it, and it lapses by itself
    Reserve {
        id: Uuid,
        #[arg(long)]
        order_id: String,
        #[arg(long)]
        order_amount: i64,
        /// 1..=86400; promod's `holds.default_seconds` when absent
        #[arg(long)]
        hold_seconds: Option<i64>,
    },
    /// Cancel the use of a coupon, or release its reservation
    Cancel {
        id: Uuid,
    },
    /// Redeem a SHARED or BATCH policy's code (admins may pass --user)
    Redeem {
        /// Case-insensitive; hyphens and spaces are ignored
        #[arg(long)]
        code: String,
        #[arg(long)]
        user: Option<Uuid>,
    },
    Get {
        id: Uuid,
    },
    /// A page of coupons, newest first: yours, or for an admin every user's
    /// (or one user's with --user)
    List {
        /// AVAILABLE, USED, EXPIRED or RESERVED
        #[arg(long)]
        status: Option<String>,
        /// Only this policy's coupons
        #[arg(long)]
        policy: Option<Uuid>,
        /// Admin: only this user's coupons (without it, every user's)
        #[arg(long)]
        user: Option<Uuid>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// A page of audit entries, newest first
    List {
        /// Only what this admin did
        #[arg(long)]
        actor: Option<Uuid>,
        /// Only this action, e.g. coupon_policy.updated or point.earned
        #[arg(long)]
        action: Option<String>,
        /// Only changes of this thing (a policy, product, sale or user id)
        #[arg(long)]
        target: Option<String>,
        /// At or after: RFC 3339, or relative like -24h
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        since: Option<DateTime<Utc>>,
        /// Before: RFC 3339, or relative like -1h
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        until: Option<DateTime<Utc>>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum CodeCmd {
    /// Generate single-use codes for a BATCH policy (admin); with --out,
    /// then download all of the policy's codes into a file
    Generate(CodeGenerate),
    /// A page of a BATCH policy's codes (admin)
    List {
        #[arg(long)]
        policy: Uuid,
        /// UNREDEEMED or REDEEMED
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Every code of a BATCH policy as CSV (`code,status`), streamed (admin)
    Export {
        #[arg(long)]
        policy: Uuid,
        /// Write here (with a progress bar) instead of stdout
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct CodeGenerate {
    #[arg(long)]
    pub policy: Uuid,
    /// 1..=1000000; with the codes generated so far, at most the policy's total
    #[arg(long)]
    pub count: i64,
    /// Up to 10 characters of A-Z and 0-9 put before each code
    #[arg(long)]
    pub prefix: Option<String>,
    /// Then download every code of the policy into this CSV file
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PointChange {
    #[arg(long)]
    pub amount: i64,
    #[arg(long)]
    pub reference: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PointCmd {
    /// Give points to a user (admin)
    Earn {
        #[arg(long)]
        user: Uuid,
        #[command(flatten)]
        change: PointChange,
        /// When the lot expires (e.g. 2027-01-01T00:00:00Z or +30d)
        /// [server default: point.lots.default_lifetime_days]
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        expires_at: Option<DateTime<Utc>>,
    },
    /// Spend points (admins may pass --user)
    Use {
        #[arg(long)]
        user: Option<Uuid>,
        #[command(flatten)]
        change: PointChange,
    },
    /// Cancel a point transaction
    Cancel { transaction_id: Uuid },
    Balance {
        #[arg(long)]
        user: Option<Uuid>,
    },
    History {
        #[arg(long)]
        user: Option<Uuid>,
        /// EARN, USE, CANCEL or EXPIRE
        #[arg(long = "type")]
        kind: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Live lots, soonest expiry first (admins may pass --user)
    Lots {
        #[arg(long)]
        user: Option<Uuid>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Holds: reserve points for a checkout, then capture or void them
    #[command(subcommand)]
    Hold(HoldCmd),
}

#[derive(Debug, Subcommand)]
pub enum HoldCmd {
    /// Reserve points (admins may pass --user); they stay in the balance
    /// but are no longer available until captured, voided or expired
    Create {
        #[arg(long)]
        user: Option<Uuid>,
        #[arg(long)]
        amount: i64,
        #[arg(long)]
        reference: Option<String>,
        /// 1..=86400; the server's default without it
        #[arg(long)]
        hold_seconds: Option<i64>,
    },
    /// Spend a pending hold as a USE: all of it, or --amount (the rest is released)
    Capture {
        id: Uuid,
        #[arg(long)]
        amount: Option<i64>,
    },
    /// Release a pending hold
    Void {
        id: Uuid,
    },
    Get {
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProductCmd {
    /// Create a product (admin)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        price: i64,
    },
    List(PageArgs),
    Get {
        id: Uuid,
    },
}

#[derive(Debug, Subcommand)]
pub enum SaleCmd {
    /// Create a time sale (admin)
    Create {
        #[arg(long)]
        product: Uuid,
        #[arg(long)]
        total_quantity: i64,
        #[arg(long)]
        sale_price: i64,
        #[arg(long)]
        per_user_limit: Option<i64>,
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        start: DateTime<Utc>,
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        end: DateTime<Utc>,
    },
    List {
        /// SCHEDULED, ACTIVE or ENDED
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    Get {
        id: Uuid,
    },
    /// Move the end or cancel a sale (admin)
    Update {
        id: Uuid,
        #[arg(long, value_parser = parse_time, allow_hyphen_values = true)]
        end: Option<DateTime<Utc>>,
        #[arg(long)]
        cancel: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderCmd {
    /// Order from a time sale
    Create {
        #[arg(long)]
        sale: Uuid,
        #[arg(long)]
        quantity: i64,
        /// Hold the units (a PENDING order) until confirmed, cancelled or expired
        #[arg(long)]
        hold: bool,
        /// The hold's lifetime (default from the server's configuration)
        #[arg(long, requires = "hold")]
        hold_seconds: Option<i64>,
    },
    /// Confirm a held (PENDING) order
    Confirm {
        id: Uuid,
    },
    /// Cancel an order; a held one gives its units back
    Cancel {
        id: Uuid,
    },
    Get {
        id: Uuid,
    },
    /// A page of orders, newest first: yours, or for an admin every user's
    /// (or one user's with --user)
    List {
        /// PENDING, CONFIRMED, CANCELLED or EXPIRED
        #[arg(long)]
        status: Option<String>,
        /// Only this sale's orders
        #[arg(long)]
        sale: Option<Uuid>,
        /// Admin: only this user's orders (without it, every user's)
        #[arg(long)]
        user: Option<Uuid>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCmd {
    /// Print events as they arrive, like kcat: follows until Ctrl-C
    #[command(after_help = "\
Uses a random consumer group and never commits offsets, so other consumers are not
disturbed. Reads every topic of promo-store/topics.txt unless --topic names some.
Follows until Ctrl-C; --no-follow stops at the end of the topics, -c N after N events.

Examples:
  promoctl events tail
  promoctl events tail --from-beginning --no-follow -o json | jq .type
  promoctl events tail --type coupon.issued --type coupon.used --user USER_ID
  promoctl events tail --aggregate POLICY_ID -c 1
  promoctl events tail --source outbox --from-beginning --no-follow")]
    Tail(TailArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Source {
    #[default]
    Kafka,
    Outbox,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Topics [default: every event topic]
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Start at the oldest event kept instead of the end
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop at the end of the topics instead of waiting for more
    #[arg(long)]
    pub no_follow: bool,
    /// Stop after printing this many events
    #[arg(short = 'c', long)]
    pub count: Option<u64>,
    /// Only these event types
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Only events of this aggregate (a policy, coupon, user, order... id)
    #[arg(long)]
    pub aggregate: Option<String>,
    /// Only events of this user
    #[arg(long)]
    pub user: Option<Uuid>,
    /// Accepted for older scripts: following is the default
    #[arg(long, hide = true, conflicts_with = "no_follow")]
    pub follow: bool,
    /// The same as `-o json`
    #[arg(long, hide = true)]
    pub json: bool,
    #[arg(long, value_enum, default_value_t = Source::Kafka)]
    pub source: Source,
    #[arg(
        long = "kafka-brokers",
        alias = "brokers",
        env = "PROMOCTL_KAFKA_BROKERS"
    )]
    pub brokers: Option<String>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub stores: crate::check::Stores,
}

/// librdkafka's security properties, for a cluster that requires TLS or SASL.
#[derive(Debug, Args, Clone, Default)]
pub struct KafkaArgs {
    /// plaintext, ssl, sasl_plaintext or sasl_ssl [default: plaintext]
    #[arg(long, env = "PROMOCTL_KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,
    /// A PEM file of the CA certificates that sign the brokers' certificates
    #[arg(long, env = "PROMOCTL_KAFKA_SSL_CA_LOCATION")]
    pub kafka_ssl_ca_location: Option<String>,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
    #[arg(long, env = "PROMOCTL_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    #[arg(long, env = "PROMOCTL_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    #[arg(long, env = "PROMOCTL_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<String>,
}

impl KafkaArgs {
    /// Each property from its flag (or env), else the config file.
    pub fn security(&self, file: &crate::config::FileConfig) -> promo_store::kafka::KafkaSecurity {
        let or = |flag: &Option<String>, key: &Option<String>| flag.clone().or_else(|| key.clone());
        promo_store::kafka::KafkaSecurity {
            security_protocol: or(&self.kafka_security_protocol, &file.kafka_security_protocol),
            ssl_ca_location: or(&self.kafka_ssl_ca_location, &file.kafka_ssl_ca_location),
            sasl_mechanism: or(&self.kafka_sasl_mechanism, &file.kafka_sasl_mechanism),
            sasl_username: or(&self.kafka_sasl_username, &file.kafka_sasl_username),
            sasl_password: or(&self.kafka_sasl_password, &file.kafka_sasl_password)
                .map(secrecy::SecretString::from),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Kafka's security properties: the flag over the config file's key.
    #[test]
    fn kafka_security_comes_from_flags_then_the_config_file() {
        use secrecy::ExposeSecret;
        let cli = Cli::try_parse_from([
            "promoctl",
            "events",
            "tail",
            "--kafka-security-protocol",
            "sasl_ssl",
        ])
        .unwrap();
        let Command::Events(EventsCmd::Tail(args)) = cli.command else {
            panic!("parsed as another command");
        };
        let file = crate::config::FileConfig {
            kafka_security_protocol: Some("ssl".into()),
            kafka_sasl_password: Some("from-file".into()),
            ..Default::default()
        };
        let sec = args.kafka.security(&file);
        assert_eq!(sec.security_protocol.as_deref(), Some("sasl_ssl"));
        let password = sec.sasl_password.as_ref().map(|p| p.expose_secret());
        assert_eq!(password, Some("from-file"));
        assert_eq!(sec.sasl_username, None);
    }

    #[test]
    fn bad_usage_exits_2() {
        let e = Cli::try_parse_from(["promoctl", "policy", "get", "not-a-uuid"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e =
            Cli::try_parse_from(["promoctl", "sale", "create", "--start", "soonish"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn relative_times_parse_on_the_command_line() {
        let p = uuid::Uuid::nil().to_string();
        let cli = Cli::try_parse_from([
            "promoctl",
            "sale",
            "create",
            "--product",
            &p,
            "--total-quantity",
            "5",
            "--sale-price",
            "100",
            "--start",
            "+5m",
            "--end",
            "2h",
        ])
        .unwrap();
        let Command::Sale(SaleCmd::Create { start, end, .. }) = cli.command else {
            panic!("parsed as another command");
        };
        assert!(end - start > chrono::Duration::minutes(100));
    }
}
