//! A push-based reader of the tar streams `pg_basebackup -Ft` writes (ustar headers, with GNU
//! long names and pax path records understood): bytes go in as they arrive, entries come out to
//! a [`TarHandler`]. The base backup uses it to pick `backup_label` and `backup_manifest` out of
//! the stream on its way to the store; restore uses it to extract into a directory. Neither ever
//! holds more than one header in memory.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const BLOCK: usize = 512;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    /// Anything else (devices, fifos, hard links): refused by extraction.
    Other(u8),
}

/// One entry's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The path inside the archive, without a trailing `/`.
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub link: String,
}

/// Receives a tar stream's entries: a header, then its content in pieces, then the end.
pub trait TarHandler {
    fn entry(&mut self, entry: &TarEntry) -> io::Result<()>;
    fn data(&mut self, bytes: &[u8]) -> io::Result<()>;
    fn entry_end(&mut self) -> io::Result<()>;
}

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Inside an entry's content: this many bytes left, then `padding` bytes to skip.
    Content { left: u64, padding: u64 },
    /// Inside a GNU long-name or pax record: collected, not handed on.
    Meta { kind: u8, left: u64, padding: u64 },
    /// Skipping padding after content.
    Padding { left: u64 },
    /// Two zero blocks seen: the archive is over.
    End,
}

/// Parses a tar stream pushed to it with [`TarReader::feed`] (or as an [`io::Write`]).
#[derive(Debug)]
pub struct TarReader<H> {
    handler: H,
    state: State,
    header: Vec<u8>,
    meta: Vec<u8>,
    long_name: Option<String>,
    zero_blocks: u32,
    /// Bytes fed so far.
    pub bytes: u64,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn padding_of(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// A NUL-terminated header field.
fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// A numeric header field: octal, or base-256 when the high bit of the first byte is set.
fn number(field: &[u8]) -> io::Result<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(b)))
                .ok_or_else(|| invalid("tar number out of range"))?;
        }
        return Ok(n);
    }
    let s = text(field);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(s, 8).map_err(|_| invalid(format!("bad tar number {s:?}")))
}

impl<H: TarHandler> TarReader<H> {
    pub fn new(handler: H) -> Self {
        Self {
            handler,
            state: State::Header,
            header: Vec::with_capacity(BLOCK),
            meta: Vec::new(),
            long_name: None,
            zero_blocks: 0,
            bytes: 0,
        }
    }

    /// Checks that the archive ended properly and hands back the handler.
    pub fn finish(self) -> io::Result<H> {
        match self.state {
            State::End => Ok(self.handler),
            State::Header if self.header.is_empty() && self.zero_blocks > 0 => Ok(self.handler),
            _ => Err(invalid("the tar stream ended in the middle of an entry")),
        }
    }

    /// Pushes the next bytes of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        self.bytes += data.len() as u64;
        while !data.is_empty() {
            match &mut self.state {
                State::End => return Ok(()),
                State::Header => {
                    let take = (BLOCK - self.header.len()).min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == BLOCK {
                        let header = std::mem::take(&mut self.header);
                        self.header_done(&header)?;
                        self.header = header;
                        self.header.clear();
                    }
                }
                State::Content { left, padding } => {
                    let take = (*left).min(data.len() as u64) as usize;
                    if take > 0 {
                        self.handler.data(&data[..take])?;
                    }
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        let padding = *padding;
                        self.handler.entry_end()?;
                        self.state = State::Padding { left: padding };
                    }
                }
                State::Meta {
                    kind,
                    left,
                    padding,
                } => {
                    let take = (*left).min(data.len() as u64) as usize;
                    self.meta.extend_from_slice(&data[..take]);
                    *left -= take as u64;
                    data = &data[take..];
                    if *left == 0 {
                        let (kind, padding) = (*kind, *padding);
                        let meta = std::mem::take(&mut self.meta);
                        self.long_name = match kind {
                            b'L' => Some(text(&meta)),
                            _ => pax_path(&meta).or(self.long_name.take()),
                        };
                        self.state = State::Padding { left: padding };
                    }
                }
                State::Padding { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    fn header_done(&mut self, h: &[u8]) -> io::Result<()> {
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks == 2 {
                self.state = State::End;
            }
            return Ok(());
        }
        self.zero_blocks = 0;
        let stored: u64 = number(&h[148..156])?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if stored != sum {
            return Err(invalid("tar header checksum mismatch"));
        }
        let size = number(&h[124..136])?;
        let typeflag = h[156];
        if matches!(typeflag, b'L' | b'x' | b'g') {
            self.meta.clear();
            if size > 1 << 20 {
                return Err(invalid("tar metadata record too large"));
            }
            if size == 0 {
                self.state = State::Header;
                return Ok(());
            }
            self.state = State::Meta {
                kind: typeflag,
                left: size,
                padding: padding_of(size),
            };
            return Ok(());
        }
        let mut path = match self.long_name.take() {
            Some(p) => p,
            None => {
                let name = text(&h[0..100]);
                let prefix = if &h[257..262] == b"ustar" {
                    text(&h[345..500])
                } else {
                    String::new()
                };
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            }
        };
        let kind = match typeflag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'2' => EntryKind::Symlink,
            other => EntryKind::Other(other),
        };
        if path.ends_with('/') {
            path.pop();
        }
        let entry = TarEntry {
            path,
            kind,
            size: if kind == EntryKind::File { size } else { 0 },
            mode: number(&h[100..108])? as u32 & 0o7777,
            link: text(&h[157..257]),
        };
        self.handler.entry(&entry)?;
        if entry.size == 0 {
            self.handler.entry_end()?;
            // Non-file entries may still carry content to skip.
            let skip = if kind == EntryKind::File {
                0
            } else {
                size + padding_of(size)
            };
            self.state = if skip == 0 {
                State::Header
            } else {
                State::Padding { left: skip }
            };
        } else {
            self.state = State::Content {
                left: entry.size,
                padding: padding_of(entry.size),
            };
        }
        Ok(())
    }
}

/// The `path` record of a pax extended header.
fn pax_path(records: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(records);
    text.lines().find_map(|line| {
        let (_, kv) = line.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}

impl<H: TarHandler> io::Write for TarReader<H> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Keeps the content of a few named entries (small files such as `backup_label`).
#[derive(Debug, Default)]
pub struct CaptureFiles {
    wanted: Vec<&'static str>,
    current: Option<usize>,
    /// The content of each wanted file seen, by its index in `wanted`.
    pub captured: Vec<Option<Vec<u8>>>,
    /// Entries seen.
    pub entries: u64,
}

impl CaptureFiles {
    pub fn new(wanted: &[&'static str]) -> Self {
        Self {
            wanted: wanted.to_vec(),
            current: None,
            captured: vec![None; wanted.len()],
            entries: 0,
        }
    }

    /// The content of `name`, if it was in the archive.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let i = self.wanted.iter().position(|w| *w == name)?;
        self.captured[i].as_deref()
    }
}

impl TarHandler for CaptureFiles {
    fn entry(&mut self, entry: &TarEntry) -> io::Result<()> {
        self.entries += 1;
        self.current = self.wanted.iter().position(|w| *w == entry.path);
        if let Some(i) = self.current {
            self.captured[i] = Some(Vec::with_capacity(entry.size as usize));
        }
        Ok(())
    }
    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(buf) = self.current.and_then(|i| self.captured[i].as_mut()) {
            buf.extend_from_slice(bytes);
        }
        Ok(())
    }
    fn entry_end(&mut self) -> io::Result<()> {
        self.current = None;
        Ok(())
    }
}

/// Extracts into a directory: regular files, directories and symbolic links, with their
/// modes; paths that would leave the directory are refused.
#[derive(Debug)]
pub struct Extract {
    root: PathBuf,
    file: Option<io::BufWriter<std::fs::File>>,
    /// Keep these entries' content in memory instead of writing them (e.g. `backup_manifest`).
    capture: CaptureFiles,
    /// Flushes written files on other threads (else each is flushed before the next is begun).
    syncer: Option<super::syncer::Syncer>,
}

impl Extract {
    pub fn new(root: &Path, keep_in_memory: &[&'static str]) -> Self {
        Self {
            root: root.to_path_buf(),
            file: None,
            capture: CaptureFiles::new(keep_in_memory),
            syncer: None,
        }
    }

    /// Flushes written files on `threads` other threads; [`Extract::finish`] waits for them.
    pub fn flushing_on(mut self, threads: usize) -> Self {
        self.syncer = Some(super::syncer::Syncer::new(threads));
        self
    }

    /// Waits until every extracted file is on disk.
    pub fn finish(mut self) -> io::Result<Self> {
        if let Some(syncer) = self.syncer.take() {
            syncer.finish()?;
        }
        Ok(self)
    }

    /// The content of an entry kept in memory.
    pub fn captured(&self, name: &str) -> Option<&[u8]> {
        self.capture.get(name)
    }

    fn target(&self, path: &str) -> io::Result<PathBuf> {
        let rel = Path::new(path);
        if path.is_empty()
            || !rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(invalid(format!("refusing to extract {path:?}")));
        }
        Ok(self.root.join(rel))
    }
}

impl TarHandler for Extract {
    fn entry(&mut self, entry: &TarEntry) -> io::Result<()> {
        self.capture.entry(entry)?;
        if self.capture.current.is_some() {
            return Ok(());
        }
        let target = self.target(&entry.path)?;
        if let Some(parent) = target.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent)?;
            }
        }
        match entry.kind {
            EntryKind::Directory => {
                match std::fs::create_dir(&target) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
            }
            EntryKind::File => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if entry.mode == 0 { 0o600 } else { entry.mode })
                    .open(&target)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("create {path}: {e}", path = target.display()),
                        )
                    })?;
                self.file = Some(io::BufWriter::with_capacity(1 << 20, file));
            }
            EntryKind::Symlink => std::os::unix::fs::symlink(&entry.link, &target)?,
            EntryKind::Other(t) => {
                return Err(invalid(format!(
                    "refusing to extract {:?}: unsupported tar entry type {:?}",
                    entry.path, t as char
                )))
            }
        }
        Ok(())
    }

    fn data(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.capture.current.is_some() {
            return self.capture.data(bytes);
        }
        match &mut self.file {
            Some(f) => io::Write::write_all(f, bytes),
            None => Ok(()),
        }
    }

    fn entry_end(&mut self) -> io::Result<()> {
        self.capture.entry_end()?;
        if let Some(f) = self.file.take() {
            let f = f.into_inner().map_err(|e| e.into_error())?;
            match &self.syncer {
                Some(syncer) => syncer.sync(f)?,
                None => f.sync_all()?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ustar header.
    fn header(name: &str, typeflag: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000600");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn archive(entries: &[(&str, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, t, content) in entries {
            out.extend(header(name, *t, content.len() as u64));
            out.extend_from_slice(content);
            out.resize(out.len() + padding_of(content.len() as u64) as usize, 0);
        }
        out.extend(vec![0u8; 2 * BLOCK]);
        out
    }

    #[test]
    fn captures_named_files_whatever_the_chunking() {
        let big = vec![7u8; 1500];
        let tar = archive(&[
            ("backup_label", b'0', b"START WAL LOCATION: 0/2000028\n"),
            ("base/", b'5', b""),
            ("base/1", b'0', &big),
            ("backup_manifest", b'0', b"{\"x\":1}"),
        ]);
        for chunk in [1, 7, 512, 513, 100_000] {
            let mut r = TarReader::new(CaptureFiles::new(&["backup_label", "backup_manifest"]));
            for piece in tar.chunks(chunk) {
                r.feed(piece).unwrap();
            }
            assert_eq!(r.bytes, tar.len() as u64);
            let c = r.finish().unwrap();
            assert_eq!(c.entries, 4);
            assert_eq!(
                c.get("backup_label").unwrap(),
                b"START WAL LOCATION: 0/2000028\n"
            );
            assert_eq!(c.get("backup_manifest").unwrap(), b"{\"x\":1}");
        }
    }

    #[test]
    fn extracts_files_and_refuses_escapes_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let tar = archive(&[
            ("PG_VERSION", b'0', b"15\n"),
            ("global/pg_control", b'0', &[1u8; 700]),
            ("pg_wal/", b'5', b""),
            ("backup_manifest", b'0', b"{}"),
        ]);
        let mut r = TarReader::new(Extract::new(dir.path(), &["backup_manifest"]));
        r.feed(&tar).unwrap();
        let e = r.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("PG_VERSION")).unwrap(),
            b"15\n"
        );
        assert_eq!(
            std::fs::read(dir.path().join("global/pg_control")).unwrap(),
            [1u8; 700]
        );
        assert!(dir.path().join("pg_wal").is_dir());
        assert!(!dir.path().join("backup_manifest").exists());
        assert_eq!(e.captured("backup_manifest").unwrap(), b"{}");

        let evil = archive(&[("../escape", b'0', b"x")]);
        let mut r = TarReader::new(Extract::new(dir.path(), &[]));
        assert!(r.feed(&evil).is_err());

        let mut damaged = archive(&[("a", b'0', b"x")]);
        damaged[0] = b'b';
        let mut r = TarReader::new(CaptureFiles::new(&[]));
        assert!(r
            .feed(&damaged)
            .unwrap_err()
            .to_string()
            .contains("checksum"));

        let cut = &archive(&[("a", b'0', &[0u8; 2000])])[..1000];
        let mut r = TarReader::new(CaptureFiles::new(&[]));
        r.feed(cut).unwrap();
        assert!(r.finish().is_err());
    }

    #[test]
    fn numbers_are_octal_or_base_256() {
        assert_eq!(number(b"00000001750\0").unwrap(), 1000);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[4] = 0x02;
        assert_eq!(number(&big).unwrap(), 2u64 << 56);
    }
}
