//! OVA archive: a POSIX ustar file holding the package, `.ovf` first (VMware and
//! VirtualBox read the descriptor from the first member and stream the rest), then the
//! `.mf`, the `.cert` if any, then the disks in References order.
//!
//! Headers are fixed for reproducibility: mode 0644, uid/gid 0 with empty uname/gname
//! (extraction then maps nothing by name, and GNU tar, bsdtar and VirtualBox all accept
//! numeric-only owners), mtime = SOURCE_DATE_EPOCH, type `0`. Names are at most 100 bytes,
//! so no pax or GNU extension headers are needed. Each member is padded to 512 bytes; the
//! archive ends with two zero blocks and is padded to a 10240-byte record, like GNU tar's
//! default output, which ovftool and VirtualBox import.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub(crate) mod atomic;
pub mod package;
pub mod reporter;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use atomic::AtomicFile;

const BLOCK: u64 = 512;
const RECORD: u64 = 10_240;
/// Largest member size an 11-digit octal size field holds (8 GiB - 1).
pub const MAX_MEMBER_BYTES: u64 = 0o777_7777_7777;

/// Errors of the OVA writer and reader.
#[derive(Debug, thiserror::Error)]
pub enum OvaError {
    /// Reading or writing a file failed.
    #[error("i/o error on `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A member name is not a short plain ASCII file name.
    #[error("member name `{name}` is not a plain ascii file name of at most 100 bytes")]
    BadName {
        /// The name.
        name: String,
    },
    /// The first member is not the descriptor.
    #[error("the first member must be the `.ovf` descriptor, not `{name}`")]
    OvfNotFirst {
        /// The first member's name.
        name: String,
    },
    /// A member is too large for a ustar size field.
    #[error("member `{name}` is {size} bytes, more than ustar's 8 GiB limit")]
    TooLarge {
        /// The member.
        name: String,
        /// Its size.
        size: u64,
    },
    /// A member changed size while being archived.
    #[error("member `{name}` changed size while being archived")]
    Changed {
        /// The member.
        name: String,
    },
    /// The archive is malformed.
    #[error("invalid tar `{path}` at byte {offset}: {reason}")]
    Invalid {
        /// The archive.
        path: PathBuf,
        /// Byte offset of the header.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A file to put in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvaMember {
    /// Name inside the archive.
    pub name: String,
    /// Where the file is now.
    pub path: PathBuf,
}

fn octal(field: &mut [u8], value: u64) {
    // Width - 1 digits, then NUL, as POSIX ustar.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(s.as_bytes());
    field[digits] = 0;
}

/// Encodes a ustar header block for a regular file.
pub fn ustar_header(name: &str, size: u64, mtime: u64) -> Result<[u8; 512], OvaError> {
    if name.is_empty()
        || name.len() > 100
        || !name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'\\')
        || name == "."
        || name == ".."
    {
        return Err(OvaError::BadName {
            name: name.to_owned(),
        });
    }
    if size > MAX_MEMBER_BYTES {
        return Err(OvaError::TooLarge {
            name: name.to_owned(),
            size,
        });
    }
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(0o777_7777_7777));
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname/gname (265..329) empty, devmajor/devminor zero-filled octal.
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    // Checksum: six octal digits, NUL, space.
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Writes the archive atomically; returns its size. The first member must be the `.ovf`.
pub fn write_ova(out: &Path, members: &[OvaMember], mtime: u64) -> Result<u64, OvaError> {
    let out_err = |source| OvaError::Io {
        path: out.to_path_buf(),
        source,
    };
    match members.first() {
        Some(m) if m.name.ends_with(".ovf") => {}
        other => {
            return Err(OvaError::OvfNotFirst {
                name: other.map(|m| m.name.clone()).unwrap_or_default(),
            });
        }
    }
    let mut dest = AtomicFile::create(out).map_err(out_err)?;
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for m in members {
        let in_err = |source| OvaError::Io {
            path: m.path.clone(),
            source,
        };
        let mut f = File::open(&m.path).map_err(in_err)?;
        let size = f.metadata().map_err(in_err)?.len();
        dest.write_all(&ustar_header(&m.name, size, mtime)?)
            .map_err(out_err)?;
        let mut copied = 0u64;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(in_err(e)),
            };
            copied += u64::try_from(n).expect("usize fits in u64");
            if copied > size {
                return Err(OvaError::Changed {
                    name: m.name.clone(),
                });
            }
            dest.write_all(&buf[..n]).map_err(out_err)?;
        }
        if copied != size {
            return Err(OvaError::Changed {
                name: m.name.clone(),
            });
        }
        let padded = size.next_multiple_of(BLOCK);
        let pad = usize::try_from(padded - size).expect("below 512");
        dest.write_all(&[0u8; 512][..pad]).map_err(out_err)?;
        total += BLOCK + padded;
    }
    // End of archive: two zero blocks, then zeros to the end of the record.
    let end = (total + 2 * BLOCK).next_multiple_of(RECORD);
    let zeros = vec![0u8; usize::try_from(end - total).expect("below one record")];
    dest.write_all(&zeros).map_err(out_err)?;
    dest.commit().map_err(out_err)?;
    Ok(end)
}

/// A member header as read back by [`list_ova`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Name.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner ids.
    pub uid: u64,
    /// Group id.
    pub gid: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: u64,
    /// Type flag.
    pub typeflag: u8,
    /// `uname`.
    pub uname: String,
    /// `gname`.
    pub gname: String,
    /// Offset of the member's data in the archive.
    pub data_offset: u64,
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .skip_while(|b| **b == b' ');
    let mut v = 0u64;
    let mut any = false;
    for b in s {
        if !(b'0'..=b'7').contains(b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Lists the members of a ustar archive, checking every header checksum.
pub fn list_ova(path: &Path) -> Result<Vec<TarEntry>, OvaError> {
    let io_err = |source| OvaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |offset, reason| OvaError::Invalid {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let len = f.metadata().map_err(io_err)?.len();
    let mut entries = Vec::new();
    let mut offset = 0u64;
    let mut h = [0u8; 512];
    loop {
        if offset + BLOCK > len {
            return Err(invalid(offset, "archive ends without two zero blocks"));
        }
        f.read_exact(&mut h).map_err(io_err)?;
        if h.iter().all(|b| *b == 0) {
            let mut second = [0u8; 512];
            f.read_exact(&mut second).map_err(io_err)?;
            if second.iter().any(|b| *b != 0) {
                return Err(invalid(offset + BLOCK, "single zero block"));
            }
            return Ok(entries);
        }
        let stored =
            parse_octal(&h[148..156]).ok_or_else(|| invalid(offset, "bad checksum field"))?;
        let mut sum = 0u64;
        for (i, b) in h.iter().enumerate() {
            sum += if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            };
        }
        if sum != stored {
            return Err(invalid(offset, "header checksum mismatch"));
        }
        if &h[257..263] != b"ustar\0" {
            return Err(invalid(offset, "not a ustar header"));
        }
        let field = |r: std::ops::Range<usize>| {
            parse_octal(&h[r]).ok_or_else(|| invalid(offset, "bad octal field"))
        };
        let size = field(124..136)?;
        let data_offset = offset + BLOCK;
        let next = size
            .checked_next_multiple_of(BLOCK)
            .and_then(|s| s.checked_add(data_offset))
            .filter(|n| *n <= len)
            .ok_or_else(|| invalid(offset, "member extends past the end"))?;
        entries.push(TarEntry {
            name: c_string(&h[0..100]),
            mode: u32::try_from(field(100..108)?).map_err(|_| invalid(offset, "mode"))?,
            uid: field(108..116)?,
            gid: field(116..124)?,
            size,
            mtime: field(136..148)?,
            typeflag: h[156],
            uname: c_string(&h[265..297]),
            gname: c_string(&h[297..329]),
            data_offset,
        });
        offset = next;
        std::io::Seek::seek(&mut f, io::SeekFrom::Start(offset)).map_err(io_err)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_and_checksum() {
        let h = ustar_header("a.ovf", 1234, 1_700_000_000).unwrap();
        assert_eq!(&h[0..6], b"a.ovf\0");
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(&h[124..136], b"00000002322\0");
        assert_eq!(h[156], b'0');
        assert_eq!(&h[257..265], b"ustar\x0000");
        let sum: u32 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(*b)
                }
            })
            .sum();
        assert_eq!(parse_octal(&h[148..156]), Some(u64::from(sum)));
    }

    #[test]
    fn header_rejects_bad_names_and_sizes() {
        for name in ["", "a/b.ovf", "..", "x y", &"a".repeat(101)] {
            assert!(
                matches!(ustar_header(name, 1, 0), Err(OvaError::BadName { .. })),
                "{name}"
            );
        }
        assert!(matches!(
            ustar_header("a", MAX_MEMBER_BYTES + 1, 0),
            Err(OvaError::TooLarge { .. })
        ));
    }

    #[test]
    fn write_then_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.ovf"), b"<Envelope/>").unwrap();
        std::fs::write(dir.path().join("x.mf"), vec![7u8; 512]).unwrap();
        let members: Vec<OvaMember> = ["x.ovf", "x.mf"]
            .iter()
            .map(|n| OvaMember {
                name: (*n).into(),
                path: dir.path().join(n),
            })
            .collect();
        let out = dir.path().join("x.ova");
        let size = write_ova(&out, &members, 42).unwrap();
        assert_eq!(size, std::fs::metadata(&out).unwrap().len());
        assert_eq!(size % 10_240, 0);
        let list = list_ova(&out).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "x.ovf");
        assert_eq!((list[0].size, list[0].mtime, list[0].mode), (11, 42, 0o644));
        assert_eq!(list[1].data_offset, 512 * 3);

        let err = write_ova(&out, &members[1..], 0).unwrap_err();
        assert!(matches!(err, OvaError::OvfNotFirst { .. }));
    }

    #[test]
    fn list_rejects_corrupt_checksum() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.ovf"), b"<E/>").unwrap();
        let out = dir.path().join("x.ova");
        let m = [OvaMember {
            name: "x.ovf".into(),
            path: dir.path().join("x.ovf"),
        }];
        write_ova(&out, &m, 0).unwrap();
        let mut b = std::fs::read(&out).unwrap();
        b[0] = b'y';
        std::fs::write(&out, b).unwrap();
        assert!(matches!(
            list_ova(&out),
            Err(OvaError::Invalid {
                reason: "header checksum mismatch",
                ..
            })
        ));
    }
}
