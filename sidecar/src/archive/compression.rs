//! The compressors archived WAL and base backups go through: gzip (deflate by `zlib-rs`), zstd,
//! lz4 (frame format) or none.
//!
//! An object records the compressor that wrote it in its name's suffix (`.gz`, `.zst`, `.lz4`,
//! none), so a reader never depends on the writer's current setting: objects written as gzip
//! before zstd became the default read as they always did.

use std::fmt;
use std::io::{Read, Write};
use std::str::FromStr;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// How archived WAL (and base backups) are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// gzip at this level (0–9).
    Gzip(u32),
    /// zstd at this level (1–19).
    Zstd(i32),
    /// lz4's frame format (its fast mode: lz4 has no levels here).
    Lz4,
}

/// The zstd level `zstd` alone means: its fastest, which keeps up with WAL at little CPU.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// The highest zstd level accepted (20–22 need far more memory than a sidecar should take).
const MAX_ZSTD_LEVEL: i32 = 19;

/// Every compressor, in the order a reader looks for an object written by another setting
/// than its own (gzip first: older archives hold it).
pub const ALL: [Compression; 4] = [
    Compression::Gzip(6),
    Compression::None,
    Compression::Zstd(DEFAULT_ZSTD_LEVEL),
    Compression::Lz4,
];

/// A compressor as an object's name records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Gzip,
    Zstd,
    Lz4,
}

impl Format {
    /// The format an object named `key` was written in (by its suffix).
    pub fn of_key(key: &str) -> Self {
        if key.ends_with(".gz") {
            Format::Gzip
        } else if key.ends_with(".zst") {
            Format::Zstd
        } else if key.ends_with(".lz4") {
            Format::Lz4
        } else {
            Format::Plain
        }
    }

    /// Wraps `inner` in this format's decompressor. gzip and zstd read concatenated members
    /// and frames as one stream, lz4 reads a frame.
    pub fn reader<'a, R: Read + 'a>(self, inner: R) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Format::Plain => Box::new(inner),
            Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
            Format::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
            Format::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(inner)),
        })
    }
}

impl Compression {
    /// The object-name suffix this compression adds.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip(_) => ".gz",
            Compression::Zstd(_) => ".zst",
            Compression::Lz4 => ".lz4",
        }
    }

    /// The format objects written with this compression are in.
    #[cfg(test)]
    pub fn format(self) -> Format {
        match self {
            Compression::None => Format::Plain,
            Compression::Gzip(_) => Format::Gzip,
            Compression::Zstd(_) => Format::Zstd,
            Compression::Lz4 => Format::Lz4,
        }
    }

    /// Compresses `raw`.
    pub fn compress(self, raw: &[u8]) -> anyhow::Result<Vec<u8>> {
        match self {
            Compression::None => return Ok(raw.to_vec()),
            Compression::Zstd(level) => {
                return zstd_in_one_go(raw, level).with_context(|| format!("compress ({self})"))
            }
            _ => {}
        }
        let mut enc = Encoder::new(Vec::with_capacity(raw.len() / 4), self)
            .with_context(|| format!("start {self} compression"))?;
        enc.write_all(raw)
            .and_then(|()| enc.finish())
            .with_context(|| format!("compress ({self})"))
    }
}

/// One zstd frame of `raw` (with the content checksum, as [`Encoder`] writes, and the content
/// size), compressed in one call on a context this thread keeps. Against the streaming encoder
/// (which copies its input into a window and compresses from there) this saves the copy and
/// takes zstd's faster whole-buffer path: about a quarter less CPU for a WAL segment at level
/// 1. Any zstd reader reads the frame.
fn zstd_in_one_go(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let context = match &mut *slot {
            Some((l, c)) if *l == level => c,
            _ => {
                let mut c = zstd::bulk::Compressor::new(level)?;
                c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
                &mut slot.insert((level, c)).1
            }
        };
        let mut out = context.compress(raw)?;
        out.shrink_to_fit();
        Ok(out)
    })
}

/// A compressor writing into `W`; [`Encoder::finish`] writes the trailer and hands `W` back.
pub enum Encoder<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Lz4(lz4_flex::frame::FrameEncoder<W>),
}

impl<W: Write> fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Encoder")
    }
}

impl<W: Write> Encoder<W> {
    pub fn new(inner: W, compression: Compression) -> std::io::Result<Self> {
        Ok(match compression {
            Compression::None => Encoder::Plain(inner),
            Compression::Gzip(level) => Encoder::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::new(level),
            )),
            Compression::Zstd(level) => {
                let mut enc = zstd::stream::write::Encoder::new(inner, level)?;
                // Lets a reader check the content, as gzip's CRC does.
                enc.include_checksum(true)?;
                Encoder::Zstd(enc)
            }
            Compression::Lz4 => Encoder::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(
                lz4_flex::frame::FrameInfo::new().content_checksum(true),
                inner,
            )),
        })
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Plain(w) => w.write_all(data),
            Encoder::Gzip(g) => g.write_all(data),
            Encoder::Zstd(z) => z.write_all(data),
            Encoder::Lz4(l) => l.write_all(data),
        }
    }

    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::Plain(w) => Ok(w),
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
            Encoder::Lz4(l) => l.finish().map_err(std::io::Error::other),
        }
    }
}

/// `file` without the compression suffix its name may end in.
pub fn strip_suffix(file: &str) -> &str {
    [".gz", ".zst", ".lz4"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))
        .unwrap_or(file)
}

/// The largest content decompressed in one call (a WAL segment is at most 1 GiB; base backup
/// parts are [`crate::backup::parts::PART_BYTES`]).
const ONE_GO_MAX: u64 = 1 << 30;

/// Undoes the compression an object's name suffix says it has.
pub fn decompress(key: &str, stored: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let format = Format::of_key(key);
    if format == Format::Plain {
        return Ok(stored);
    }
    // A frame that says how much it holds (every zstd object written in one go) is
    // decompressed in one call into a buffer of that size: no buffer grown and copied again.
    // Anything else (no size, a size past what an object here holds, more than one frame)
    // goes through the stream reader, which also words any damage.
    if format == Format::Zstd {
        if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(&stored) {
            if size <= ONE_GO_MAX {
                let one_go = zstd::bulk::Decompressor::new()
                    .and_then(|mut d| d.decompress(&stored, size as usize));
                if let Ok(raw) = one_go {
                    return Ok(raw);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(stored.len() * 4);
    format
        .reader(stored.as_slice())
        .and_then(|mut r| r.read_to_end(&mut out))
        .with_context(|| format!("decompress {key}"))?;
    Ok(out)
}

impl FromStr for Compression {
    type Err = String;

    /// `none`, `gzip` (level 6), `gzip:N` or a bare `N` (gzip level N, 0-9), `zstd` (level 1),
    /// `zstd:N` (1-19), `lz4`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not a compression: expected none, gzip, gzip:LEVEL (0-9, or a bare \
                 gzip level 0-9), zstd, zstd:LEVEL (1-{MAX_ZSTD_LEVEL}) or lz4"
            )
        };
        let (name, level) = match s.trim().split_once(':') {
            Some((name, level)) => (name, Some(level)),
            None => (s.trim(), None),
        };
        match (name, level) {
            ("none", None) => Ok(Compression::None),
            ("lz4", None) => Ok(Compression::Lz4),
            ("gzip", None) => Ok(Compression::Gzip(6)),
            ("zstd", None) => Ok(Compression::Zstd(DEFAULT_ZSTD_LEVEL)),
            ("gzip", Some(level)) | (level, None) => match level.parse::<u32>() {
                Ok(n) if n <= 9 => Ok(Compression::Gzip(n)),
                _ => Err(bad()),
            },
            ("zstd", Some(level)) => match level.parse::<i32>() {
                Ok(n) if (1..=MAX_ZSTD_LEVEL).contains(&n) => Ok(Compression::Zstd(n)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            // A bare level: what settings files and backup manifests have always said.
            Compression::Gzip(level) => write!(f, "{level}"),
            Compression::Zstd(level) => write!(f, "zstd:{level}"),
            Compression::Lz4 => f.write_str("lz4"),
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 7).to_le_bytes())
            .collect()
    }

    #[test]
    fn names_parse_and_print_back() {
        for (text, c) in [
            ("none", Compression::None),
            ("0", Compression::Gzip(0)),
            ("9", Compression::Gzip(9)),
            ("gzip", Compression::Gzip(6)),
            ("gzip:3", Compression::Gzip(3)),
            ("zstd", Compression::Zstd(1)),
            ("zstd:19", Compression::Zstd(19)),
            ("lz4", Compression::Lz4),
        ] {
            assert_eq!(text.parse(), Ok(c), "{text}");
            assert_eq!(c.to_string().parse(), Ok(c), "{c}");
        }
        for bad in [
            "10", "-1", "zstd:0", "zstd:22", "lz4:1", "brotli", "gzip:x", "",
        ] {
            let err = bad.parse::<Compression>().unwrap_err();
            assert!(err.contains("expected none, gzip"), "{err}");
        }
    }

    #[test]
    fn every_compressor_round_trips_and_its_suffix_marks_its_format() {
        let raw = sample();
        for c in [
            Compression::None,
            Compression::Gzip(0),
            Compression::Gzip(6),
            Compression::Zstd(1),
            Compression::Zstd(9),
            Compression::Lz4,
        ] {
            let stored = c.compress(&raw).unwrap();
            let key = format!("db/wal/000000010000000000000001{}", c.suffix());
            assert_eq!(Format::of_key(&key), c.format(), "{c}");
            assert_eq!(decompress(&key, stored.clone()).unwrap(), raw, "{c}");
            // The suffix is the marker: the bytes carry their format's own magic number.
            let magic: &[u8] = match c.format() {
                Format::Plain => &raw[..4],
                Format::Gzip => &[0x1f, 0x8b],
                Format::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
                Format::Lz4 => &[0x04, 0x22, 0x4d, 0x18],
            };
            assert!(stored.starts_with(magic), "{c}");
            if c != Compression::None && c != Compression::Gzip(0) {
                assert!(stored.len() < raw.len() / 10, "{c}: {}", stored.len());
            }
        }
    }

    #[test]
    fn damaged_objects_fail_to_decompress() {
        let raw = sample();
        for c in [Compression::Gzip(1), Compression::Zstd(1), Compression::Lz4] {
            let mut stored = c.compress(&raw).unwrap();
            let mid = stored.len() / 2;
            stored[mid] ^= 0xff;
            let key = format!("x{}", c.suffix());
            assert!(decompress(&key, stored).is_err(), "{c}");
        }
    }

    #[test]
    fn zstd_frames_in_one_go_and_streamed_read_alike_and_both_are_checked() {
        let raw = sample();
        let one_go = Compression::Zstd(1).compress(&raw).unwrap();
        let mut enc = Encoder::new(Vec::new(), Compression::Zstd(1)).unwrap();
        enc.write_all(&raw).unwrap();
        let streamed = enc.finish().unwrap();
        // Frame header descriptor: bit 2 is the content checksum, bits 6-7 the size field.
        assert_ne!(one_go[4] & 0b100, 0, "no checksum");
        assert_ne!(one_go[4] >> 6, 0, "no content size");
        assert_ne!(streamed[4] & 0b100, 0, "no checksum");
        for stored in [&one_go, &streamed] {
            assert_eq!(decompress("x.zst", stored.clone()).unwrap(), raw);
            let mut read = Vec::new();
            Format::Zstd
                .reader(stored.as_slice())
                .unwrap()
                .read_to_end(&mut read)
                .unwrap();
            assert_eq!(read, raw);
            // A flipped bit in the checksum alone is caught.
            let mut damaged = stored.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 1;
            assert!(decompress("x.zst", damaged).is_err());
        }
    }

    #[test]
    fn concatenated_streams_read_as_one() {
        let (a, b) = (vec![1u8; 70_000], vec![2u8; 90_000]);
        for c in [Compression::Gzip(1), Compression::Zstd(1)] {
            let mut stored = c.compress(&a).unwrap();
            stored.extend(c.compress(&b).unwrap());
            let out = decompress(&format!("x{}", c.suffix()), stored).unwrap();
            assert_eq!(out, [a.clone(), b.clone()].concat(), "{c}");
        }
    }
}
