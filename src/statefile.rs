//! Reading the daemon's own state files (pending records, the metadata cache, the upload
//! journal) as the untrusted input they are: another local user or a tampered backup may
//! have put anything there. A file is read only if it is a regular file of this user,
//! reached without following a symlink, and never past a size bound.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Opens `path` for reading only if it is a regular file of this user, not through a
/// symlink (`ELOOP`), and without waiting on a FIFO put in its place.
pub fn open_own_file(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    check_own_file(&file)?;
    Ok(file)
}

/// Err unless `file` is a regular file owned by this process's user.
pub fn check_own_file(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("owned by uid {}, not {me}", meta.uid()),
        ));
    }
    Ok(())
}

/// Makes `dir` (and the parents it lacks) with mode 0700. One that exists and is this
/// user's but open to others (an earlier version made them 0755) is narrowed to 0700; one
/// that is someone else's is refused: cognifs keeps file contents and names there.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is owned by uid {}, not {me}", dir.display(), meta.uid()),
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::info!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o7777), "narrowing to 0700: only you may read it");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The whole of an own file (see [`open_own_file`]) of at most `max` bytes.
pub fn read_own_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_own_file(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Calls `each` with every line of `reader` (without its `\n`) that is at most `max` bytes;
/// longer lines are skipped without being held in memory. Stops at the first read error.
pub fn for_each_line(mut reader: impl BufRead, max: usize, mut each: impl FnMut(&[u8])) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(max as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            each(&line);
        } else if line.len() <= max {
            // The last line, without a newline.
            each(&line);
            return;
        } else if !skip_line(&mut reader) {
            return;
        }
    }
}

/// Skips to just past the next `\n`; false at the end of input or on an error.
fn skip_line(reader: &mut impl BufRead) -> bool {
    loop {
        let (found, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (true, i + 1),
                None => (false, buf.len()),
            },
        };
        reader.consume(used);
        if found {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        // A small buffer, so long lines span many fills.
        let reader = io::BufReader::with_capacity(4, input);
        for_each_line(reader, max, |l| out.push(l.to_vec()));
        out
    }

    #[test]
    fn long_lines_are_skipped_and_the_rest_read() {
        assert_eq!(lines(b"ab\ncd", 2), [b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(
            lines(b"abc\nde\nfghij\n\nk", 2),
            [b"de".to_vec(), b"".to_vec(), b"k".to_vec()]
        );
        assert_eq!(lines(b"abcdef", 2), Vec::<Vec<u8>>::new());
        assert_eq!(lines(b"", 2), Vec::<Vec<u8>>::new());
        assert_eq!(lines(b"\xff\xfe\n", 2), [b"\xff\xfe".to_vec()]);
    }

    #[test]
    fn private_dirs_are_made_0700_narrowed_to_it_or_refused() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("a/b/c");
        private_dir(&new).unwrap();
        assert_eq!((mode(&root.path().join("a")), mode(&new)), (0o700, 0o700));
        let wide = root.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);
        if rustix::process::geteuid().is_root() {
            std::os::unix::fs::chown(&wide, Some(12345), None).unwrap();
            let err = private_dir(&wide).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
        }
    }

    #[test]
    fn only_own_regular_files_are_read_and_only_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_own_file(&file, 5).unwrap(), b"12345");
        assert!(read_own_file(&file, 4).is_err());
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(
            read_own_file(&link, 5).unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        assert!(read_own_file(dir.path(), 5).is_err());
    }
}
