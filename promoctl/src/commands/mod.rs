//! Management commands: each one is a call (or two) to the gateway REST API.

mod audit;
mod auth;
mod code;
mod config;
mod coupon;
mod inventory;
mod point;
mod shell;
mod timesale;

use crate::cli::{Cli, Command, Global, PageArgs};
use crate::client::{Client, Session};
use crate::config::{config_dir, pick, FileConfig, DEFAULT_GATEWAY};
use crate::error::CtlResult;
use crate::output::{render, Format, Output};
use serde_json::{Map, Value};
use std::path::PathBuf;
use uuid::Uuid;

/// What every command needs: the resolved config and a way to get a client.
pub struct Ctx {
    pub global: Global,
    pub file: FileConfig,
    pub dir: PathBuf,
    pub gateway_url: String,
}

impl Ctx {
    pub fn new(global: Global) -> CtlResult<Ctx> {
        let dir = config_dir()?;
        let mut file = FileConfig::load(&dir)?;
        // The flag over the file, once, for every client built from `file`.
        if let Some(ca) = &global.certificate_authority {
            file.certificate_authority = Some(ca.clone());
        }
        let gateway_url = pick(
            global.gateway_url.as_deref(),
            file.gateway_url.as_deref(),
            DEFAULT_GATEWAY,
        )
        .trim_end_matches('/')
        .to_owned();
        Ok(Ctx {
            global,
            file,
            dir,
            gateway_url,
        })
    }

    pub fn format(&self) -> Format {
        self.global.output.unwrap_or_default()
    }

    pub fn output(&self) -> Output {
        Output::detect(self.format(), self.global.no_headers)
    }

    pub fn client(&self) -> CtlResult<Client> {
        Client::new(
            &self.gateway_url,
            self.global.idempotency_key.clone(),
            self.file.certificate_authority.as_deref(),
        )
    }

    pub fn session(&self) -> Session {
        Session {
            dir: self.dir.clone(),
            gateway_url: self.gateway_url.clone(),
            email: self
                .global
                .as_email
                .clone()
                .or_else(|| self.file.email.clone()),
            password: self
                .global
                .as_password
                .clone()
                .or_else(|| self.file.password.clone()),
        }
    }

    pub async fn authed(&self) -> CtlResult<Client> {
        self.session().authed(self.client()?).await
    }

    pub fn print(&self, value: &Value, columns: &[&str]) {
        println!("{}", render(value, columns, &self.output()));
    }
}

pub async fn run(cli: Cli) -> CtlResult<()> {
    crate::config::select_context(cli.global.context.as_deref());
    match cli.command {
        // Neither reads the config: they work on a machine without one.
        Command::Completion { shell } => shell::completion(shell),
        Command::Man { out_dir } => shell::man(out_dir.as_deref()),
        command => {
            let ctx = Ctx::new(cli.global)?;
            let out = ctx.output();
            match command {
                Command::Check(args) => crate::check::run_cli(args, &out).await,
                Command::Events(crate::cli::EventsCmd::Tail(args)) => {
                    crate::events::tail(args, ctx.global.output).await
                }
                Command::Inventory(cmd) => inventory::inventory(cmd, &out).await,
                Command::Dashboard(args) => {
                    crate::dashboard::run(args, &ctx.gateway_url, &ctx.file).await
                }
                Command::Load(mut args) => {
                    let file = &ctx.file;
                    args.admin_email = Some(pick(
                        args.admin_email.as_deref(),
                        file.email.as_deref(),
                        "admin@promo.local",
                    ));
                    args.admin_password = Some(pick(
                        args.admin_password.as_deref(),
                        file.password.as_deref(),
                        "admin-password",
                    ));
                    let ca = file.certificate_authority.as_deref();
                    crate::load::run(*args, &ctx.gateway_url, ca, &out).await
                }
                Command::Config(c) => config::config(&ctx, c),
                Command::Login(a) => auth::login(&ctx, a).await,
                Command::Logout => auth::logout(&ctx).await,
                Command::User(c) => auth::user(&ctx, c).await,
                Command::Policy(c) => coupon::policy(&ctx, c).await,
                Command::Coupon(c) => coupon::coupon(&ctx, c).await,
                Command::Code(c) => code::code(&ctx, c).await,
                Command::Audit(c) => audit::audit(&ctx, c).await,
                Command::Point(c) => point::point(&ctx, c).await,
                Command::Product(c) => timesale::product(&ctx, c).await,
                Command::Sale(c) => timesale::sale(&ctx, c).await,
                Command::Order(c) => timesale::order(&ctx, c).await,
                Command::Completion { .. } | Command::Man { .. } => Ok(()),
            }
        }
    }
}

pub(crate) fn page_query(p: &PageArgs) -> Vec<(&'static str, String)> {
    vec![("page", p.page.to_string()), ("size", p.size.to_string())]
}

/// The query of a search (`coupon list`, `order list`): the page, the
/// status in upper case, and each id that is given; an id left out is no
/// filter (for an admin without `user_id`: every user's).
pub(crate) fn search_query<const N: usize>(
    p: &PageArgs,
    status: Option<String>,
    ids: [(&'static str, Option<Uuid>); N],
) -> Vec<(&'static str, String)> {
    let mut q = page_query(p);
    q.extend(status.map(|s| ("status", s.to_uppercase())));
    q.extend(
        ids.into_iter()
            .filter_map(|(k, v)| Some((k, v?.to_string()))),
    );
    q
}

/// A JSON object of the fields that are set: optional flags are left out so
/// that the server applies its own defaults.
#[derive(Default)]
pub(crate) struct Body(Map<String, Value>);

impl Body {
    pub fn new() -> Body {
        Body::default()
    }

    pub fn set(mut self, k: &str, v: impl Into<Value>) -> Body {
        self.0.insert(k.to_owned(), v.into());
        self
    }

    pub fn opt<T: Into<Value>>(mut self, k: &str, v: Option<T>) -> Body {
        if let Some(v) = v {
            self.0.insert(k.to_owned(), v.into());
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

pub(crate) fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_options_are_left_out_of_bodies() {
        let b = Body::new()
            .set("name", "x")
            .opt::<i64>("per_user_limit", None)
            .opt("total_quantity", Some(5));
        assert_eq!(
            b.into_value(),
            serde_json::json!({"name": "x", "total_quantity": 5})
        );
    }

    #[test]
    fn a_search_sends_only_the_filters_given() {
        let p = PageArgs { page: 2, size: 5 };
        let sale = Uuid::new_v4();
        let q = search_query(
            &p,
            Some("pending".into()),
            [("time_sale_id", Some(sale)), ("user_id", None)],
        );
        let want = [
            ("page", "2".to_owned()),
            ("size", "5".into()),
            ("status", "PENDING".into()),
            ("time_sale_id", sale.to_string()),
        ];
        assert_eq!(q, want);
        assert_eq!(search_query(&p, None, [("user_id", None)]).len(), 2);
    }
}
