//! code commands: a BATCH policy's single-use codes, generated, listed and
//! exported (API.md, "Coupon codes"). The export is streamed to its file or
//! stdout chunk by chunk, so a million codes take constant memory.

use super::{page_query, Body, Ctx};
use crate::cli::{CodeCmd, CodeGenerate};
use crate::client::Client;
use crate::error::{CtlError, CtlResult};
use crate::stream;
use indicatif::{HumanCount, ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

const BATCH_COLUMNS: &[&str] = &["policy_id", "generated", "total_codes", "out", "exported"];
const CODE_COLUMNS: &[&str] = &["code", "status", "coupon_id", "redeemed_at"];

/// How long `code generate` waits for its answer: the server answers once
/// every code is committed (10-20 s for a million on a small host) and
/// gives up after `gateway.bulk_timeout_ms` (5 minutes by default); waiting
/// longer than the server lets its own 503 through rather than a timeout
/// that leaves the outcome unknown.
const GENERATE_TIMEOUT: Duration = Duration::from_secs(6 * 60);

pub async fn code(ctx: &Ctx, cmd: CodeCmd) -> CtlResult<()> {
    let c = ctx.authed().await?;
    match cmd {
        CodeCmd::Generate(a) => generate(ctx, &c, a).await,
        CodeCmd::List {
            policy,
            status,
            page,
        } => {
            let mut q = page_query(&page);
            if let Some(s) = status {
                q.push(("status", s.to_uppercase()));
            }
            let v = c.get(&codes_path(policy), &q).await?;
            ctx.print(&v, CODE_COLUMNS);
            Ok(())
        }
        CodeCmd::Export { policy, out } => export(ctx, &c, policy, out).await,
    }
}

fn codes_path(policy: Uuid) -> String {
    format!("/coupon-policies/{policy}/codes")
}

/// One POST (a spinner while the server works), then with `--out` the
/// download of every code of the policy.
async fn generate(ctx: &Ctx, c: &Client, a: CodeGenerate) -> CtlResult<()> {
    let body = Body::new().set("count", a.count).opt("prefix", a.prefix);
    let spinner = spinner(format!(
        "generating {} codes",
        HumanCount(a.count.max(0) as u64)
    ));
    let answer = c
        .clone()
        .with_timeout(GENERATE_TIMEOUT)
        .post(&codes_path(a.policy), body.into_value())
        .await;
    spinner.finish_and_clear();
    let mut v = answer?;
    if let Some(out) = &a.out {
        let expected = v["total_codes"].as_u64().unwrap_or(0);
        let exported = download(c, a.policy, expected, out).await?;
        v["out"] = out.display().to_string().into();
        v["exported"] = exported.into();
    }
    ctx.print(&v, BATCH_COLUMNS);
    Ok(())
}

/// To stdout as it arrives, or into `--out` with a progress bar over the
/// policy's `codes_generated`.
async fn export(ctx: &Ctx, c: &Client, policy: Uuid, out: Option<PathBuf>) -> CtlResult<()> {
    let Some(out) = out else {
        let resp = c.get_stream(&export_path(policy)).await?;
        let mut stdout = tokio::io::stdout();
        stream::copy_lines(resp, c.base(), &mut stdout, |_| {}).await?;
        return Ok(());
    };
    let p = c.get(&format!("/coupon-policies/{policy}"), &[]).await?;
    let expected = p["codes_generated"].as_u64().unwrap_or(0);
    let exported = download(c, policy, expected, &out).await?;
    let v = json!({"policy_id": policy, "out": out.display().to_string(), "exported": exported});
    ctx.print(&v, BATCH_COLUMNS);
    Ok(())
}

fn export_path(policy: Uuid) -> String {
    format!("/coupon-policies/{policy}/codes/export")
}

/// Streams the policy's export into `out` and returns the codes in it.
/// It is written to `out.part` and renamed once whole, so a cut transfer
/// never leaves a file that looks complete. Fewer codes than `expected`
/// (the policy's count when asked) is a cut transfer too: codes are never
/// deleted.
async fn download(c: &Client, policy: Uuid, expected: u64, out: &Path) -> CtlResult<u64> {
    let part = part_path(out);
    let copied = download_to(c, policy, expected, &part).await;
    let renamed = match copied {
        Ok(codes) if codes < expected => Err(CtlError::Other(anyhow::anyhow!(
            "the export ended after {codes} of {expected} codes"
        ))),
        Ok(codes) => tokio::fs::rename(&part, out)
            .await
            .map(|()| codes)
            .map_err(|e| CtlError::other(format!("cannot write {}", out.display()), e)),
        Err(e) => Err(e),
    };
    if renamed.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    renamed
}

async fn download_to(c: &Client, policy: Uuid, expected: u64, part: &Path) -> CtlResult<u64> {
    let resp = c.get_stream(&export_path(policy)).await?;
    let file = tokio::fs::File::create(part)
        .await
        .map_err(|e| CtlError::other(format!("cannot create {}", part.display()), e))?;
    let mut w = tokio::io::BufWriter::with_capacity(256 * 1024, file);
    let bar = codes_bar(expected);
    // The first line is the `code,status` header.
    let progress = |lines: u64| {
        let codes = lines.saturating_sub(1);
        if codes > bar.length().unwrap_or(0) {
            bar.set_length(codes);
        }
        bar.set_position(codes);
    };
    let lines = stream::copy_lines(resp, c.base(), &mut w, progress).await;
    bar.finish_and_clear();
    Ok(lines?.saturating_sub(1))
}

fn part_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// A spinner on stderr (drawn only on a terminal) while one call runs.
fn spinner(msg: String) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} [{elapsed}] {msg}").expect("template"));
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(100));
    pb
}

/// A bar over the codes downloaded, on stderr (drawn only on a terminal).
fn codes_bar(expected: u64) -> ProgressBar {
    let pb = ProgressBar::new(expected);
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed}] {bar:30} {human_pos}/{human_len} codes (eta {eta})",
        )
        .expect("template"),
    );
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_part_file_sits_next_to_the_target() {
        assert_eq!(
            part_path(Path::new("/tmp/codes.csv")),
            PathBuf::from("/tmp/codes.csv.part")
        );
    }
}
