//! The operator's side of the real `promoctl` binary that needs no server:
//! shell completions that load in bash, man pages, and one configuration
//! (flags > env > the config file's context > defaults) for every command.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use uuid::Uuid;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let d = std::env::temp_dir().join(format!("promoctl-ux-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// promoctl with `dir` as its config dir and no PROMOCTL_* from the caller.
fn promoctl(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promoctl"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PROMOCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("PROMOCTL_CONFIG_DIR", dir)
        .envs(env.iter().copied())
        .output()
        .expect("run promoctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bash_completion_loads_and_completes_nouns_and_flags() {
    let dir = Dir::new();
    let out = promoctl(&dir.0, &["completion", "bash"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = dir.0.join("promoctl.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // What bash does on `promoctl po<TAB>`, then `promoctl events tail --no-f<TAB>`.
    let probe = format!(
        "source {}\n\
         COMP_WORDS=(promoctl po); COMP_CWORD=1; COMP_LINE='promoctl po'; COMP_POINT=11\n\
         _promoctl promoctl po promoctl; echo \"${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(promoctl events tail --no-f); COMP_CWORD=3\n\
         _promoctl promoctl --no-f tail; echo \"${{COMPREPLY[*]}}\"",
        script.display()
    );
    let bash = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("bash");
    let said = stdout(&bash);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 2, "{said}{}", stderr(&bash));
    let mut nouns: Vec<&str> = lines[0].split_whitespace().collect();
    nouns.sort();
    assert_eq!(nouns, ["point", "policy"], "{said}");
    assert!(lines[1].contains("--no-follow"), "{said}");
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let dir = Dir::new();
    for (shell, marker) in [
        ("zsh", "#compdef promoctl"),
        ("fish", "complete -c promoctl"),
    ] {
        let out = promoctl(&dir.0, &["completion", shell], &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let s = stdout(&out);
        assert!(
            s.contains(marker) && s.contains("use-context"),
            "{shell}: {s}"
        );
    }
    let out = promoctl(&dir.0, &["completion", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_render_for_the_tool_and_each_command() {
    let dir = Dir::new();
    let out = promoctl(&dir.0, &["man"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = stdout(&out);
    assert!(
        page.contains(".TH promoctl 1") && page.contains("events"),
        "{page}"
    );
    let pages = dir.0.join("man1");
    let out = promoctl(&dir.0, &["man", "--out-dir", pages.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in [
        "promoctl.1",
        "promoctl-events-tail.1",
        "promoctl-config-use-context.1",
    ] {
        let p = pages.join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".TH"), "{name}");
    }
    // man(1) itself reads it, where it is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let man = Command::new("man")
            .args(["-l", pages.join("promoctl-events-tail.1").to_str().unwrap()])
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = stdout(&man);
        assert!(text.contains("--no-follow"), "{text}{}", stderr(&man));
    }
}

const CONFIG: &str = "\
# shared by every context
email = \"ops@promo.local\"
gateway_url = \"http://127.0.0.1:9\"
current_context = \"local\"

[contexts.local]
redis_url = \"redis://127.0.0.1:6379/3\"

[contexts.staging]
gateway_url = \"https://promo.staging.test\"
";

fn view(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let out = promoctl(
        dir,
        &[args, &["config", "view", "-o", "json"]].concat(),
        env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn flags_beat_env_beat_the_context_beat_shared_keys() {
    let dir = Dir::new();
    std::fs::write(dir.0.join("config.toml"), CONFIG).unwrap();
    let v = view(&dir.0, &[], &[]);
    assert_eq!(v["context"], "local");
    assert_eq!(v["gateway_url"], "http://127.0.0.1:9");
    assert_eq!(v["redis_url"], "redis://127.0.0.1:6379/3");
    assert_eq!(v["email"], "ops@promo.local");

    let v = view(&dir.0, &["--context", "staging"], &[]);
    assert_eq!(v["gateway_url"], "https://promo.staging.test");
    assert_eq!(v["redis_url"], Value::Null, "staging has no redis_url");
    let env = [("PROMOCTL_CONTEXT", "staging")];
    assert_eq!(view(&dir.0, &[], &env)["context"], "staging");

    let env = [("PROMOCTL_GATEWAY_URL", "http://env:1")];
    assert_eq!(view(&dir.0, &[], &env)["gateway_url"], "http://env:1");
    let flag = ["--gateway-url", "http://flag:1"];
    assert_eq!(view(&dir.0, &flag, &env)["gateway_url"], "http://flag:1");

    let out = promoctl(&dir.0, &["--context", "prod", "policy", "list"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no context \"prod\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_view_prints_no_password() {
    let dir = Dir::new();
    let file = "password = \"hunter2\"\n\
                coupon_database_url = \"postgres://ops:s3cret@db:5432/coupon\"\n";
    std::fs::write(dir.0.join("config.toml"), file).unwrap();
    let out = promoctl(&dir.0, &["config", "view", "-o", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("hunter2") && !text.contains("s3cret"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["password"], "***");
    assert_eq!(
        v["coupon_database_url"],
        "postgres://ops:***@db:5432/coupon"
    );
}

#[test]
fn use_context_switches_and_get_contexts_marks_the_current_one() {
    let dir = Dir::new();
    std::fs::write(dir.0.join("config.toml"), CONFIG).unwrap();
    let out = promoctl(&dir.0, &["config", "use-context", "staging"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = promoctl(&dir.0, &["config", "current-context"], &[]);
    assert_eq!(stdout(&out).trim(), "staging");
    let kept = std::fs::read_to_string(dir.0.join("config.toml")).unwrap();
    assert!(kept.starts_with("# shared by every context"), "{kept}");

    let out = promoctl(&dir.0, &["config", "get-contexts", "--no-headers"], &[]);
    let table = stdout(&out);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["local", "http://127.0.0.1:9"],
            vec!["*", "staging", "https://promo.staging.test"],
        ],
        "{table}"
    );

    let out = promoctl(&dir.0, &["config", "use-context", "nope"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("local, staging"), "{}", stderr(&out));
}

/// Every command reads the same settings: `load` reaches the gateway named
/// by the config file (a closed port here), as the REST commands do.
#[test]
fn load_uses_the_config_files_gateway() {
    let dir = Dir::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gateway = format!("http://127.0.0.1:{port}");
    std::fs::write(
        dir.0.join("config.toml"),
        format!("gateway_url = \"{gateway}\"\n"),
    )
    .unwrap();
    let load = [
        "load",
        "health",
        "--rate",
        "1",
        "--duration",
        "1s",
        "--users",
        "1",
        "--quiet",
    ];
    let out = promoctl(&dir.0, &load, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&gateway), "{}", stderr(&out));
}
