//! Running the `mori` binary from the integration tests.

use std::process::Command;

/// Runs `mori ARGS`: (succeeded, stdout, stderr).
pub fn mori(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mori"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}
