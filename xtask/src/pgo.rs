//! `cargo xtask pgo`: profile-guided builds of the server and of the bare
//! hyper ceiling it is benchmarked against.
//!
//! Each binary is built with instrumentation, run under the HTTP load the
//! benchmarks use (`bench/profile/drive.py`: modern calls, legacy calls,
//! handshakes), stopped with SIGINT so that it writes its profile, and built
//! again with that profile. Both sides get the same treatment, so a bench of
//! the two stays a like-for-like comparison. The results land in
//! `target/pgo/bin/`; `cargo xtask bench http --pgo` runs them.
//!
//! Needs `llvm-profdata` from the toolchain (`rustup component add
//! llvm-tools`) and `python3` for the load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::root;

/// Where `cargo xtask pgo` leaves the optimized binaries.
fn bin_dir() -> PathBuf {
    root().join("target/pgo/bin")
}

/// One binary to build with a profile.
struct Subject {
    /// Its name under `target/pgo/`.
    name: &'static str,
    /// `cargo build` arguments, after `build --release`.
    build: Vec<String>,
    /// The binary's file name in the target directory's `release/`.
    binary: &'static str,
    /// Its arguments when trained.
    args: &'static [&'static str],
}

/// Builds both binaries with profiles; returns the directory holding them.
pub(crate) fn build() -> Result<PathBuf> {
    let profdata = llvm_profdata()?;
    let subjects = [
        Subject {
            name: "mcp-server",
            build: ["-p", "mcp-server", "--bin", "mcp-server"]
                .map(String::from)
                .to_vec(),
            binary: "mcp-server",
            args: &["--listen", "127.0.0.1:0", "--store", "memory"],
        },
        Subject {
            name: "hyper-echo",
            build: vec![
                "--manifest-path".into(),
                root().join("bench/peers/Cargo.toml").display().to_string(),
                "--bin".into(),
                "hyper-echo".into(),
            ],
            binary: "hyper-echo",
            args: &["--listen", "127.0.0.1:0"],
        },
    ];
    let out = bin_dir();
    std::fs::create_dir_all(&out)?;
    for subject in &subjects {
        let built = build_one(subject, &profdata)?;
        let dest = out.join(subject.binary);
        let _ = std::fs::remove_file(&dest);
        std::fs::copy(&built, &dest)
            .with_context(|| format!("cannot copy {} to {}", built.display(), dest.display()))?;
        eprintln!("pgo: {}", dest.display());
    }
    Ok(out)
}

fn build_one(subject: &Subject, profdata: &Path) -> Result<PathBuf> {
    let base = root().join("target/pgo").join(subject.name);
    let profiles = base.join("profiles");
    // The instrumented build (its build scripts write profiles too: cleared
    // before the training run).
    let generated = cargo_build(
        subject,
        &base.join("gen"),
        &format!("-Cprofile-generate={}", profiles.display()),
    )?;
    let _ = std::fs::remove_dir_all(&profiles);
    std::fs::create_dir_all(&profiles)?;
    train(&generated, subject.args)?;
    let raw: Vec<PathBuf> = std::fs::read_dir(&profiles)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "profraw"))
        .collect();
    if raw.is_empty() {
        bail!(
            "{} wrote no profile into {} (was it stopped before it could?)",
            subject.name,
            profiles.display()
        );
    }
    let merged = base.join("merged.profdata");
    let status = Command::new(profdata)
        .arg("merge")
        .arg("-o")
        .arg(&merged)
        .args(&raw)
        .status()
        .context("cannot run llvm-profdata")?;
    if !status.success() {
        bail!("llvm-profdata merge failed ({status})");
    }
    cargo_build(
        subject,
        &base.join("use"),
        &format!("-Cprofile-use={}", merged.display()),
    )
}

/// `cargo build --release` of `subject` into `target_dir` with `rustflags`;
/// returns the binary.
fn cargo_build(subject: &Subject, target_dir: &Path, rustflags: &str) -> Result<PathBuf> {
    eprintln!(
        "$ RUSTFLAGS={rustflags} cargo build --release {}",
        subject.build.join(" ")
    );
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release"])
        .args(&subject.build)
        .env("CARGO_TARGET_DIR", target_dir)
        .env("RUSTFLAGS", rustflags)
        .current_dir(root())
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("the build of {} failed", subject.name);
    }
    Ok(target_dir.join("release").join(subject.binary))
}

/// Runs `program` under the benchmarks' load, then stops it with SIGINT so
/// that it exits normally and writes its profile.
fn train(program: &Path, args: &[&str]) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    // The server logs its address on stderr, the ceiling prints it on
    // stdout: both are read (to the end, so that neither ever blocks on a
    // full pipe) and the first address found is taken.
    let (found, address) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    for stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let found = found.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://").nth(1) {
                    let _ = found.send(rest.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
    }
    drop(found);
    let Ok(addr) = address.recv_timeout(Duration::from_secs(30)) else {
        let _ = child.kill();
        bail!("{} did not say where it listens", program.display());
    };
    let drive = root().join("bench/profile/drive.py");
    let load = [
        ("modern", "64000"),
        ("call", "32000"),
        ("handshake", "8000"),
    ];
    let mut trained = Ok(());
    for (mode, count) in load {
        let status = Command::new("python3")
            .arg(&drive)
            .args([addr.as_str(), mode, count, "64"])
            .stdout(Stdio::null())
            .status()
            .context("cannot run python3 (needed for the training load)")?;
        if !status.success() {
            trained = Err(anyhow::anyhow!("the training load ({mode}) failed"));
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    // A process that does not exit on SIGINT writes no profile: give it a
    // moment, then stop waiting.
    for _ in 0..100 {
        if child.try_wait()?.is_some() {
            return trained;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    trained.and(Err(anyhow::anyhow!(
        "{} did not exit within 10 s of SIGINT",
        program.display()
    )))
}

/// The toolchain's `llvm-profdata` (component `llvm-tools`).
fn llvm_profdata() -> Result<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = output(Command::new(&rustc).args(["--print", "sysroot"]))?;
    let version = output(Command::new(&rustc).arg("-vV"))?;
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .context("rustc -vV names no host")?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !path.exists() {
        bail!(
            "llvm-profdata is not installed at {}: run `rustup component add llvm-tools`",
            path.display()
        );
    }
    Ok(path)
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output().context("cannot run rustc")?;
    if !out.status.success() {
        bail!("{command:?} failed");
    }
    Ok(String::from_utf8(out.stdout)?)
}
