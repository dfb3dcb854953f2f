//! PEM files on disk: atomic writes, private keys readable by the owner only.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Mode of certificate files: certificates are public.
const CERT_MODE: u32 = 0o644;
/// Mode of private key files.
const KEY_MODE: u32 = 0o600;
/// Mode of a directory created for keys.
const DIR_MODE: u32 = 0o700;

/// Where [`write_pem_files`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemPaths {
    /// `<dir>/<name>.pem`
    pub cert: PathBuf,
    /// `<dir>/<name>-key.pem`, when a key was written.
    pub key: Option<PathBuf>,
}

/// Writes `<dir>/<name>.pem` (mode `0644`) and, when given, `<dir>/<name>-key.pem` (mode `0600`).
///
/// Each file is written to a temporary file in `dir`, fsynced, then renamed over the target, so
/// a reader (a node polling for renewed certificates) sees the old or the new file, never a
/// partial one. The key is written before the certificate: a reader that sees a new certificate
/// can then always find its key (a reader that sees a new key with the old certificate gets a
/// mismatch, which the node's reload rejects and retries). `dir` is created with mode `0700`
/// when missing. `name` must be a plain file name stem.
pub fn write_pem_files(
    dir: &Path,
    name: &str,
    cert_pem: &str,
    key_pem: Option<&str>,
) -> Result<PemPaths> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(Error::io(
            dir.join(name),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} is not a plain file name"),
            ),
        ));
    }
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
    }

    let cert_path = dir.join(format!("{name}.pem"));
    let key_path = match key_pem {
        Some(key_pem) => {
            let key_path = dir.join(format!("{name}-key.pem"));
            write_atomic(&key_path, key_pem.as_bytes(), KEY_MODE)?;
            Some(key_path)
        }
        None => None,
    };
    write_atomic(&cert_path, cert_pem.as_bytes(), CERT_MODE)?;
    // Make the renames durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    Ok(PemPaths {
        cert: cert_path,
        key: key_path,
    })
}

/// Reads a text file; the error names the file.
pub fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The temporary file is created with mode 0600, so a key is never readable by others,
    // not even for a moment.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.as_file()
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|e| Error::io(tmp.path().to_path_buf(), e))?;
    tmp.write_all(contents)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| Error::io(tmp.path().to_path_buf(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
