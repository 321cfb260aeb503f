//! `cluster check` and `cluster start` on configuration files: the documented example is
//! valid, and a bad file is refused with its file, line, column and key, before anything
//! starts.

use std::path::PathBuf;
use std::process::Command;

fn cluster() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cluster"))
}

fn temp_file(tag: &str, text: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = std::env::temp_dir().join(format!("{tag}-{}-{nanos}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn the_documented_example_is_valid() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster.toml");
    let out = cluster().arg("check").arg(&example).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("ok: web (2 x"), "{stderr}");
    assert!(stderr.contains("worker (1 x"), "{stderr}");
}

#[test]
fn a_misspelt_key_is_refused_with_file_line_and_key() {
    let file = temp_file("misspelt", "[group.web]\nexec = \"sh\"\ninstnces = 2\n");
    for command in ["check", "start"] {
        let out = cluster().arg(command).arg(&file).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        let at = format!("{}:3:1: group.web.instnces: unknown field", file.display());
        assert!(stderr.contains(&at), "{command}: {stderr}");
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn bad_values_are_refused_with_line_and_key() {
    let cases = [
        (
            "[group.web]\nexec = \"sh\"\nlisten = [\"127.0.0.1\"]\n",
            ":3:11: group.web.listen:",
        ),
        (
            "[group.web]\nexec = \"sh\"\nuser = \"no-such-user-here\"\n",
            ":3:8: group.web.user: unknown user",
        ),
        (
            "[group.web]\nexec = \"no-such-program-here\"\n",
            ":2:8: group.web.exec:",
        ),
        (
            "[group.web]\nexec = \"sh\"\ninstances = \"two\"\n",
            ":3:13: group.web.instances:",
        ),
        (
            "[group.web]\nexec = \"sh\"\nscheduling = \"round-robin\"\n",
            ":3:14: group.web.scheduling:",
        ),
    ];
    for (text, expected) in cases {
        let file = temp_file("bad-value", text);
        let out = cluster().arg("check").arg(&file).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        let _ = std::fs::remove_file(file);
    }
}
