//! The on-disk format of one block file: its name (a hash of the object's version and the
//! block's number) and its header (what it holds, checksummed), parsed as untrusted input.

use std::path::PathBuf;

use crate::fs::cache::BlockKey;

pub(super) const MAGIC: &[u8; 8] = b"cgfsblk1";
/// Fixed part of the header: magic, header length, data length, data crc, block, block
/// size, and the three lengths of location, key and etag.
pub(super) const FIXED_HEADER: usize = 8 + 4 + 4 + 4 + 8 + 8 + 2 + 2 + 2;
/// Location (`s3://bucket/prefix/`), key and etag together; anything longer is refused.
pub(super) const MAX_NAMES: usize = 4096;
/// The largest header a block file can have (a longer one is not ours).
pub(super) const MAX_HEADER: usize = FIXED_HEADER + MAX_NAMES + 4;

/// What one block file is: the object's version and the block's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileName {
    pub(super) hash: u64,
    pub(super) block: u64,
}

impl FileName {
    pub(super) fn parse(name: &[u8]) -> Option<FileName> {
        let text = std::str::from_utf8(name).ok()?;
        let (hash, block) = text.split_once('-')?;
        if hash.len() != 16 || block.is_empty() || block.len() > 20 {
            return None;
        }
        Some(FileName {
            hash: u64::from_str_radix(hash, 16).ok()?,
            block: block.parse().ok()?,
        })
    }

    pub(super) fn relative(&self) -> PathBuf {
        PathBuf::from(format!("{:02x}", self.hash >> 56))
            .join(format!("{:016x}-{}", self.hash, self.block))
    }
}

/// FNV-1a over the parts, each followed by a zero byte: stable across builds and runs.
pub(super) fn hash_of(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain([0u8].iter()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

pub(super) fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// What the header of one block says.
pub(super) struct Header<'a> {
    pub(super) data_len: usize,
    pub(super) data_crc: u32,
    pub(super) block: u64,
    pub(super) block_size: u64,
    pub(super) location: &'a [u8],
    pub(super) rel: &'a [u8],
    pub(super) etag: &'a [u8],
    pub(super) header_len: usize,
}

pub(super) fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses a block file's header from its first bytes; `None` unless it is whole and its
/// checksum holds. Everything is checked before it is used: the file is untrusted input.
pub(super) fn parse_header(b: &[u8]) -> Option<Header<'_>> {
    if b.len() < FIXED_HEADER + 4 || &b[..8] != MAGIC {
        return None;
    }
    let header_len = u32_at(b, 8) as usize;
    let (loc_len, rel_len, etag_len) = (u16_at(b, 36), u16_at(b, 38), u16_at(b, 40));
    let names = loc_len + rel_len + etag_len;
    if names > MAX_NAMES || header_len != FIXED_HEADER + names + 4 || b.len() < header_len {
        return None;
    }
    let body = &b[..header_len - 4];
    if crc32c(body) != u32_at(b, header_len - 4) {
        return None;
    }
    let names_at = FIXED_HEADER;
    Some(Header {
        data_len: u32_at(b, 12) as usize,
        data_crc: u32_at(b, 16),
        block: u64_at(b, 20),
        block_size: u64_at(b, 28),
        location: &b[names_at..names_at + loc_len],
        rel: &b[names_at + loc_len..names_at + loc_len + rel_len],
        etag: &b[names_at + loc_len + rel_len..names_at + names],
        header_len,
    })
}

/// The header of a block of `key` holding `data`, for a cache of `location` in blocks of
/// `block_size`.
pub(super) fn encode_header(
    location: &str,
    key: &BlockKey,
    block_size: u64,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    let (loc, rel, etag) = (location.as_bytes(), key.key.as_bytes(), key.etag.as_bytes());
    let names = loc.len() + rel.len() + etag.len();
    if names > MAX_NAMES {
        return Err(std::io::Error::other("names too long for a block header"));
    }
    let header_len = FIXED_HEADER + names + 4;
    let mut h = Vec::with_capacity(header_len);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&(header_len as u32).to_le_bytes());
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    h.extend_from_slice(&crc32c(data).to_le_bytes());
    h.extend_from_slice(&key.block.to_le_bytes());
    h.extend_from_slice(&block_size.to_le_bytes());
    for part in [loc, rel, etag] {
        h.extend_from_slice(&(part.len() as u16).to_le_bytes());
    }
    h.extend_from_slice(loc);
    h.extend_from_slice(rel);
    h.extend_from_slice(etag);
    let crc = crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    Ok(h)
}
