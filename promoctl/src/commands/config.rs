//! `promoctl config`: the config file's contexts, like `kubectl config`.

use super::Ctx;
use crate::cli::ConfigCmd;
use crate::config::{config_path, use_context, ConfigFile};
use crate::error::{CtlError, CtlResult};
use promo_store::urls::redact;
use serde_json::json;

pub fn config(ctx: &Ctx, cmd: ConfigCmd) -> CtlResult<()> {
    let out = ctx.output();
    match cmd {
        ConfigCmd::UseContext { name } => {
            use_context(&ctx.dir, &name)?;
            eprintln!("switched to context {name:?}");
            Ok(())
        }
        ConfigCmd::CurrentContext => {
            let file = ConfigFile::load(&ctx.dir)?;
            match file.context_name() {
                Some(name) => println!("{name}"),
                None => eprintln!("no current context: the file's shared keys apply"),
            }
            Ok(())
        }
        ConfigCmd::GetContexts => {
            let file = ConfigFile::load(&ctx.dir)?;
            let current = file.context_name().map(str::to_owned);
            let items: Vec<_> = file
                .contexts
                .iter()
                .map(|(name, c)| {
                    let shared = file.shared.gateway_url.as_deref();
                    json!({
                        "current": if current.as_deref() == Some(name) { "*" } else { "" },
                        "name": name,
                        "gateway_url": c.gateway_url.as_deref().or(shared),
                    })
                })
                .collect();
            let n = items.len();
            let page = json!({"items": items, "page": 1, "size": n, "total": n});
            println!(
                "{}",
                crate::output::render(&page, &["current", "name", "gateway_url"], &out)
            );
            Ok(())
        }
        ConfigCmd::View => {
            // What every command would use now; no password prints, neither
            // the gateway's nor one inside a store url.
            let mut settings = serde_json::to_value(&ctx.file)
                .map_err(|e| CtlError::other("cannot show the settings", e))?;
            settings["gateway_url"] = json!(ctx.gateway_url);
            if let Some(map) = settings.as_object_mut() {
                for (k, v) in map.iter_mut() {
                    match v.as_str() {
                        Some(_) if k.ends_with("password") => *v = json!("***"),
                        Some(url) if k.ends_with("_url") => *v = json!(redact(url)),
                        _ => {}
                    }
                }
            }
            let file = ConfigFile::load(&ctx.dir)?;
            settings["context"] = json!(file.context_name());
            settings["file"] = json!(config_path(&ctx.dir).display().to_string());
            ctx.print(&settings, &["file", "context", "gateway_url"]);
            Ok(())
        }
    }
}
