//! Deterministic ramdisks from a directory tree: entries sorted by path, owner 0:0, one
//! fixed mtime, inodes numbered in that order, modes kept. The tree's own timestamps,
//! inode numbers, owners and directory-listing order never reach the archive.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::cpio::{NewcWriter, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG};
use crate::error::{Error, Result};

/// Writes a newc archive of everything under `root` (not `root` itself) to `out`.
pub fn write_ramdisk<W: Write>(root: &Path, mtime: u32, out: W) -> Result<W> {
    let mut paths = Vec::new();
    collect(root, "", &mut paths)?;
    // Byte order of the full path puts every directory before its children.
    paths.sort();
    let mut w = NewcWriter::new(out, mtime);
    for rel in &paths {
        let full = root.join(rel);
        let meta = fs::symlink_metadata(&full)?;
        let mode = meta.mode();
        match mode & S_IFMT {
            S_IFDIR => w.add(rel, mode, 0, &[][..])?,
            S_IFREG => w.add(rel, mode, meta.len(), File::open(&full)?)?,
            S_IFLNK => {
                let target = fs::read_link(&full)?;
                let target = target
                    .to_str()
                    .ok_or_else(|| unarchivable(rel, "link target is not UTF-8"))?;
                w.add(rel, mode, target.len() as u64, target.as_bytes())?;
            }
            _ => {
                return Err(unarchivable(
                    rel,
                    "only directories, regular files and symlinks are archived",
                ));
            }
        }
    }
    w.finish()
}

/// Builds a ramdisk file atomically.
pub fn build_ramdisk_file(root: &Path, mtime: u32, output: &Path) -> Result<()> {
    // The temporary output would otherwise be archived into itself, half written.
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let (Ok(root_abs), Ok(parent_abs)) = (root.canonicalize(), parent.canonicalize())
        && parent_abs.starts_with(&root_abs)
    {
        return Err(Error::Unarchivable {
            path: output.display().to_string(),
            reason: "the output would be inside the tree being archived".into(),
        });
    }
    crate::writer::write_atomically(output, |f| {
        let mut buffered = std::io::BufWriter::new(f);
        write_ramdisk(root, mtime, &mut buffered)?;
        buffered.flush()?;
        Ok(())
    })
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let listing = fs::read_dir(dir).map_err(|source| Error::Open {
        path: dir.display().to_string(),
        source,
    })?;
    for entry in listing {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_str().ok_or_else(|| {
            unarchivable(
                &format!("{prefix}{}", name.to_string_lossy()),
                "name is not UTF-8",
            )
        })?;
        let rel = format!("{prefix}{name}");
        let is_dir = entry.file_type()?.is_dir();
        out.push(rel.clone());
        if is_dir {
            collect(&entry.path(), &format!("{rel}/"), out)?;
        }
    }
    Ok(())
}

fn unarchivable(path: &str, reason: &str) -> Error {
    Error::Unarchivable {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}
