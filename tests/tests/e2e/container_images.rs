//! The container images: `images/Dockerfile` (targets `lognode` and `operator`) and
//! `images/build.sh`, which builds the static binaries they copy and the images with buildah.
//!
//! * The Dockerfile's final stages are `FROM scratch` with no `RUN` or `SHELL`, a numeric
//!   non-root `USER` (the UID the operator's StatefulSet and the chart run as), an exec-form
//!   `ENTRYPOINT` naming a binary the stage copies, and copy exactly the workspace's binaries.
//! * `images/build.sh images` builds the binaries statically (no ELF interpreter), builds both
//!   images with buildah into private storage, and each image holds nothing but its binaries,
//!   which run from the image's root filesystem alone, as UID 65532.
//!
//! The second test compiles the node and the operator once more (static, for
//! `x86_64-unknown-linux-gnu`) and is slow the first time; later runs reuse the build.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use logcluster_operator::resources::statefulset::RUN_AS;
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// The images and the binaries each must contain (in `/usr/local/bin`), entrypoint first.
const IMAGES: [(&str, &str, &[&str]); 2] = [
    ("lognode", "lognode", &["lognode", "logctl"]),
    ("operator", "logcluster-operator", &["logcluster-operator"]),
];
/// Bound on building the binaries and images (a cold static build of the workspace on a busy
/// 2-core machine). Not an assertion on speed: it only turns a hang into an error.
const BUILD_PATIENCE: Duration = Duration::from_secs(90 * 60);

/// One `FROM` stage: its base, its name and its instructions (keyword upper-cased, arguments).
#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// Parses a Dockerfile: comments and blank lines dropped, `\` continuations joined.
fn parse_dockerfile(text: &str) -> Result<Vec<Stage>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(body) = trimmed.strip_suffix('\\') {
            current.push_str(body);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            logical.push(std::mem::take(&mut current));
        }
    }
    ensure!(
        current.is_empty(),
        "the Dockerfile ends inside a continuation"
    );
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, args) = line.split_once(' ').unwrap_or((&line, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let (base, name) = match words.as_slice() {
                [base] => (*base, None),
                [base, as_, name] if as_.eq_ignore_ascii_case("as") => (*base, Some(*name)),
                _ => bail!("unexpected FROM {args}"),
            };
            stages.push(Stage {
                base: base.to_owned(),
                name: name.map(str::to_owned),
                instructions: Vec::new(),
            });
        } else if keyword == "ARG" && stages.is_empty() {
            // Global build arguments.
        } else {
            stages
                .last_mut()
                .with_context(|| format!("{keyword} before any FROM"))?
                .instructions
                .push((keyword, args));
        }
    }
    Ok(stages)
}

/// `["/a", "b"]` (exec form) → its strings; the shell form is refused.
fn exec_form(args: &str) -> Result<Vec<String>> {
    let value: Value = serde_json::from_str(args)
        .with_context(|| format!("{args} is not the exec (JSON array) form"))?;
    value
        .as_array()
        .context("not an array")?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).context("not a string"))
        .collect()
}

/// The binaries `images/build.sh` builds (its `BINARIES=(…)` line).
fn build_script_binaries() -> Result<BTreeSet<String>> {
    let script = std::fs::read_to_string(format!("{ROOT}/images/build.sh"))?;
    let line = script
        .lines()
        .find_map(|l| l.strip_prefix("BINARIES=("))
        .context("no BINARIES=( in images/build.sh")?;
    Ok(line
        .trim_end_matches(')')
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

/// The workspace's binary targets that the images may copy, as Cargo itself lists them (its
/// rules for `src/main.rs`, `src/bin/*.rs` and `[[bin]]` sections are not ours to re-implement).
fn workspace_binaries() -> Result<BTreeSet<String>> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(ROOT)
        .stderr(Stdio::inherit())
        .output()
        .context("cargo metadata")?;
    ensure!(output.status.success(), "cargo metadata: {}", output.status);
    let metadata: Value = serde_json::from_slice(&output.stdout).context("cargo metadata JSON")?;
    let mut bins = BTreeSet::new();
    for package in metadata["packages"].as_array().context("no packages")? {
        for target in package["targets"].as_array().context("no targets")? {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
            if is_bin {
                bins.insert(target["name"].as_str().context("target name")?.to_owned());
            }
        }
    }
    Ok(bins)
}

#[test]
fn images_dockerfile_stages_are_static_non_root_and_shell_free() -> Result<()> {
    let text = std::fs::read_to_string(format!("{ROOT}/images/Dockerfile"))?;
    let stages = parse_dockerfile(&text)?;
    let workspace = workspace_binaries()?;
    let mut copied_everywhere = BTreeSet::new();
    for (target, entrypoint, binaries) in IMAGES {
        let stage = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(target))
            .with_context(|| format!("no stage {target}"))?;
        // An empty base: nothing to pull, no shell, no libraries.
        assert_eq!(stage.base, "scratch", "stage {target}");
        let mut user = None;
        let mut entry = None;
        let mut copied = BTreeSet::new();
        for (keyword, args) in &stage.instructions {
            match keyword.as_str() {
                // Nothing can run in a scratch stage, and nothing should.
                "RUN" | "SHELL" | "ONBUILD" | "ADD" => bail!("{target}: {keyword} {args}"),
                "USER" => user = Some(args.clone()),
                "ENTRYPOINT" => entry = Some(exec_form(args)?),
                "CMD" => bail!("{target}: CMD (the StatefulSet and the chart pass the arguments)"),
                "COPY" => {
                    let words: Vec<&str> = args
                        .split_whitespace()
                        .filter(|w| !w.starts_with("--"))
                        .collect();
                    ensure!(
                        !args.contains("--from"),
                        "{target}: COPY --from (binaries come from the context)"
                    );
                    let (dest, sources) = words.split_last().context("COPY without arguments")?;
                    assert_eq!(*dest, "/usr/local/bin/", "{target}: COPY destination");
                    for source in sources {
                        let name = source
                            .strip_prefix("bin/")
                            .with_context(|| format!("{target}: COPY {source} is not from bin/"))?;
                        copied.insert(name.to_owned());
                    }
                }
                _ => {}
            }
        }
        let expected: BTreeSet<String> = binaries.iter().map(|b| (*b).to_owned()).collect();
        assert_eq!(copied, expected, "{target}: binaries copied");
        ensure!(
            copied.is_subset(&workspace),
            "{target} copies {copied:?}, the workspace builds {workspace:?}"
        );
        // USER uid:gid, numeric (Kubernetes' runAsNonRoot can only verify a numeric user) and
        // not root; the same ids the operator's StatefulSet and the chart set.
        let user = user.with_context(|| format!("{target}: no USER"))?;
        let (uid, gid) = user
            .split_once(':')
            .with_context(|| format!("{target}: USER {user} is not uid:gid"))?;
        let uid: i64 = uid
            .parse()
            .with_context(|| format!("{target}: USER {user} is not numeric"))?;
        let gid: i64 = gid
            .parse()
            .with_context(|| format!("{target}: USER {user} is not numeric"))?;
        ensure!(uid > 0 && gid > 0, "{target}: USER {user} is root");
        assert_eq!((uid, gid), (RUN_AS, RUN_AS), "{target}: USER");
        let entry = entry.with_context(|| format!("{target}: no ENTRYPOINT"))?;
        assert_eq!(
            entry,
            vec![format!("/usr/local/bin/{entrypoint}")],
            "{target}: ENTRYPOINT"
        );
        copied_everywhere.extend(copied);
    }
    // The script builds exactly what the images copy.
    assert_eq!(build_script_binaries()?, copied_everywhere);
    // The chart runs the operator as the same user.
    let values = std::fs::read_to_string(format!("{ROOT}/charts/logcluster-operator/values.yaml"))?;
    ensure!(
        values.contains(&format!("\nrunAsUser: {RUN_AS}\n")),
        "the chart's runAsUser is not {RUN_AS}"
    );
    Ok(())
}

/// `<target>` of the running test binary (`<target>/<profile>/deps/e2e-…`), unless
/// `CARGO_TARGET_DIR` names it.
fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    Ok(exe
        .ancestors()
        .nth(3)
        .context("unexpected test binary location")?
        .to_owned())
}

/// Whether an ELF executable names a program interpreter (dynamic loader): the ELF64
/// program headers, looked up by hand.
fn has_interpreter(path: &Path) -> Result<bool> {
    const PT_INTERP: u32 = 3;
    let data = std::fs::read(path)?;
    ensure!(
        data.len() > 64 && data[..4] == *b"\x7fELF" && data[4] == 2 && data[5] == 1,
        "{} is not a little-endian ELF64 file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap_or_default());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap_or_default());
    let phoff = usize::try_from(u64_at(0x20))?;
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    ensure!(
        phoff + phentsize * phnum <= data.len(),
        "{}: truncated program headers",
        path.display()
    );
    Ok((0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP))
}

/// Runs `cmd` to completion within `patience`, returning its combined output; an error (with
/// the output) when it fails or runs too long.
fn run_bounded(mut cmd: Command, what: &str, log: &Path, patience: Duration) -> Result<()> {
    let file = std::fs::File::create(log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let deadline = Instant::now() + patience;
    let tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    loop {
        if let Some(status) = child.try_wait()? {
            ensure!(status.success(), "{what} failed ({status}):\n{}", tail());
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {patience:?}:\n{}", tail());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn output_ok(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    ensure!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every file (not directory) under `root`, relative to it.
fn files_under(root: &Path) -> Result<BTreeSet<String>> {
    let mut files = BTreeSet::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path().strip_prefix(root)?.display().to_string();
                files.insert(rel);
            }
        }
    }
    Ok(files)
}

/// buildah with private storage in `root`.
fn buildah(root: &Path) -> Command {
    let mut cmd = Command::new("buildah");
    cmd.arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(root.join("storage"))
        .arg("--runroot")
        .arg(root.join("run"));
    cmd
}

/// Removes the buildah working container when dropped (also on a failed assertion).
struct WorkingContainer<'a> {
    root: &'a Path,
    id: String,
}

impl Drop for WorkingContainer<'_> {
    fn drop(&mut self) {
        let _ = buildah(self.root).args(["umount", &self.id]).output();
        let _ = buildah(self.root).args(["rm", &self.id]).output();
    }
}

#[test]
fn images_build_static_binaries_and_scratch_images_that_run() -> Result<()> {
    let found = Command::new("buildah").arg("--version").output();
    ensure!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "buildah is not installed: `make setup` installs it (images/build.sh setup)"
    );
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "this test mounts images and chroots into them, which needs root (euid {euid})"
    );
    let work = tempfile::Builder::new().prefix("lc-images-").tempdir()?;
    let context = work.path().join("context");
    let storage = work.path().join("buildah");
    let tag = format!("test-{}", std::process::id());
    let registry = "localhost/logcluster-test";
    let target = target_dir()?;

    let mut build = Command::new(format!("{ROOT}/images/build.sh"));
    build
        .arg("images")
        .env("CARGO_TARGET_DIR", &target)
        // The test builds the dev profile (what the rest of the suite builds); `make images`
        // builds release. The Dockerfile and the static linking are the same.
        .env("LOGCLUSTER_IMAGE_PROFILE", "dev")
        .env("LOGCLUSTER_IMAGE_CONTEXT", &context)
        .env("LOGCLUSTER_IMAGE_REGISTRY", registry)
        .env("LOGCLUSTER_IMAGE_TAG", &tag)
        .env("BUILDAH_ROOT", &storage);
    run_bounded(
        build,
        "images/build.sh images",
        &work.path().join("build.log"),
        BUILD_PATIENCE,
    )?;

    let version = env!("CARGO_PKG_VERSION");
    for (target_name, entrypoint, binaries) in IMAGES {
        // The binaries the Dockerfile copied are static: no dynamic loader.
        for bin in binaries {
            let path = context.join("bin").join(bin);
            ensure!(
                !has_interpreter(&path)?,
                "{} is dynamically linked",
                path.display()
            );
        }
        let image_name = match target_name {
            "lognode" => "lognode",
            _ => "logcluster-operator",
        };
        let image = format!("{registry}/{image_name}:{tag}");
        let inspect: Value = serde_json::from_str(&output_ok(
            buildah(&storage).args(["inspect", "--type", "image", &image]),
            "buildah inspect",
        )?)?;
        let config = &inspect["OCIv1"]["config"];
        assert_eq!(config["User"], format!("{RUN_AS}:{RUN_AS}"), "{image}");
        assert_eq!(
            config["Entrypoint"],
            serde_json::json!([format!("/usr/local/bin/{entrypoint}")]),
            "{image}"
        );
        ensure!(
            config["Cmd"].is_null(),
            "{image} has a CMD: {}",
            config["Cmd"]
        );
        assert_eq!(
            inspect["OCIv1"]["config"]["Labels"]["org.opencontainers.image.version"],
            version
        );

        // The image's file system: the binaries and nothing else (no shell, no libraries).
        let id = output_ok(
            buildah(&storage).args(["from", "--pull-never", &image]),
            "buildah from",
        )?
        .trim()
        .to_owned();
        let container = WorkingContainer { root: &storage, id };
        let mount = PathBuf::from(
            output_ok(
                buildah(&storage).args(["mount", &container.id]),
                "buildah mount",
            )?
            .trim(),
        );
        let files = files_under(&mount)?;
        let expected: BTreeSet<String> = binaries
            .iter()
            .map(|b| format!("usr/local/bin/{b}"))
            .collect();
        assert_eq!(files, expected, "{image}: files");
        ensure!(!mount.join("bin/sh").exists(), "{image} has a shell");
        // Each binary runs from the image alone, as the image's user.
        for bin in binaries {
            let out = output_ok(
                // Absolute: `env_clear` leaves no PATH to find it by (coreutils' chroot).
                Command::new("/usr/sbin/chroot")
                    .arg(format!("--userspec={RUN_AS}:{RUN_AS}"))
                    .arg(&mount)
                    .arg(format!("/usr/local/bin/{bin}"))
                    .arg("--version")
                    .env_clear(),
                &format!("{bin} --version inside {image}"),
            )?;
            ensure!(
                out.contains(version),
                "{bin} --version in {image} printed {out:?}"
            );
        }
        drop(container);
        let _ = buildah(&storage).args(["rmi", &image]).output();
    }
    Ok(())
}
