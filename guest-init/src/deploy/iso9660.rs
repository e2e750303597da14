//! Just enough ISO 9660 (ECMA-119) to read one small file from the root directory of a
//! CD-ROM: the primary volume descriptor (volume id, root directory), directory records,
//! and Rock Ridge `NM` names (the real file name xorriso/genisoimage `-r` record beside
//! the 8.3 one). Every offset and length read from the medium is bounds-checked; sizes are
//! capped by the caller's limit.

/// Bytes per logical sector of a CD-ROM.
pub const SECTOR: u64 = 2048;
/// The volume descriptor set starts at sector 16.
const FIRST_DESCRIPTOR: u64 = 16;
/// Descriptors looked at before giving up.
const MAX_DESCRIPTORS: u64 = 32;
/// Largest root directory read.
const MAX_DIRECTORY_BYTES: u32 = 1 << 20;

/// Reads `buf.len()` bytes at `offset`; `false` on any error or short read.
pub trait ReadAt {
    /// Fills `buf` from `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool;
}

impl ReadAt for &[u8] {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        let Ok(start) = usize::try_from(offset) else {
            return false;
        };
        match start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }
}

/// The primary volume descriptor fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Volume identifier, trailing spaces removed (e.g. `cidata`, `OVF ENV`).
    pub id: String,
    root_extent: u32,
    root_size: u32,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Finds the primary volume descriptor; `None` if this is not an ISO 9660 medium.
pub fn open(dev: &mut impl ReadAt) -> Option<Volume> {
    let mut d = [0u8; 2048];
    for i in 0..MAX_DESCRIPTORS {
        if !dev.read_at((FIRST_DESCRIPTOR + i) * SECTOR, &mut d) || &d[1..6] != b"CD001" {
            return None;
        }
        match d[0] {
            1 => {
                if u16::from_le_bytes([d[128], d[129]]) != 2048 {
                    return None;
                }
                let id = String::from_utf8_lossy(&d[40..72]).trim_end().to_owned();
                return Some(Volume {
                    id,
                    root_extent: le32(&d, 156 + 2),
                    root_size: le32(&d, 156 + 10),
                });
            }
            255 => return None,
            _ => {}
        }
    }
    None
}

/// The Rock Ridge `NM` name in a record's system use area, if any.
fn rock_ridge_name(system_use: &[u8]) -> Option<String> {
    let mut i = 0;
    let mut name = Vec::new();
    while i + 4 <= system_use.len() {
        let len = usize::from(system_use[i + 2]);
        if len < 4 || i + len > system_use.len() {
            break;
        }
        if &system_use[i..i + 2] == b"NM" && len >= 5 {
            name.extend_from_slice(&system_use[i + 5..i + len]);
            if system_use[i + 4] & 1 == 0 {
                break; // no CONTINUE flag
            }
        }
        i += len;
    }
    (!name.is_empty()).then(|| String::from_utf8_lossy(&name).into_owned())
}

/// An ISO 9660 name (`META_DAT.;1`) in comparable form: lowercase, no version, no
/// trailing dot, `_` for `-`.
fn plain_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = s.split(';').next().unwrap_or_default();
    s.trim_end_matches('.').to_ascii_lowercase()
}

fn matches(wanted: &str, iso_name: &[u8], rr: Option<&str>) -> bool {
    if let Some(rr) = rr {
        return rr == wanted;
    }
    let w = wanted.to_ascii_lowercase().replace('-', "_");
    let n = plain_name(iso_name);
    n == w || (n.len() == 8 && !w.contains('.') && w.starts_with(&n))
}

/// Reads the file `name` from the root directory, if it exists and is at most `limit`
/// bytes.
pub fn read_root_file(
    dev: &mut impl ReadAt,
    volume: &Volume,
    name: &str,
    limit: usize,
) -> Option<Vec<u8>> {
    let size = volume.root_size.min(MAX_DIRECTORY_BYTES);
    let mut dir = vec![0u8; usize::try_from(size).ok()?];
    if !dev.read_at(u64::from(volume.root_extent) * SECTOR, &mut dir) {
        return None;
    }
    let mut pos = 0usize;
    while pos < dir.len() {
        let len = usize::from(dir[pos]);
        if len == 0 {
            // Records do not cross sectors: continue at the next one.
            pos = (pos / 2048 + 1) * 2048;
            continue;
        }
        if len < 34 || pos + len > dir.len() {
            return None;
        }
        let rec = &dir[pos..pos + len];
        pos += len;
        let name_len = usize::from(rec[32]);
        if 33 + name_len > rec.len() || rec[25] & 2 != 0 {
            continue; // malformed or a directory
        }
        let iso_name = &rec[33..33 + name_len];
        let su_start = 33 + name_len + usize::from(name_len.is_multiple_of(2));
        let rr = rec.get(su_start..).and_then(rock_ridge_name);
        if !matches(name, iso_name, rr.as_deref()) {
            continue;
        }
        let file_size = usize::try_from(le32(rec, 10)).ok()?;
        if file_size > limit {
            return None;
        }
        let mut data = vec![0u8; file_size];
        return dev
            .read_at(u64::from(le32(rec, 2)) * SECTOR, &mut data)
            .then_some(data);
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn record(name: &[u8], rr: Option<&str>, extent: u32, size: u32, dir: bool) -> Vec<u8> {
        let mut r = vec![0u8; 33];
        r[2..6].copy_from_slice(&extent.to_le_bytes());
        r[10..14].copy_from_slice(&size.to_le_bytes());
        r[25] = if dir { 2 } else { 0 };
        r[32] = u8::try_from(name.len()).unwrap();
        r.extend_from_slice(name);
        if name.len().is_multiple_of(2) {
            r.push(0);
        }
        if let Some(rr) = rr {
            r.extend_from_slice(b"NM");
            r.push(u8::try_from(5 + rr.len()).unwrap());
            r.extend_from_slice(&[1, 0]);
            r.extend_from_slice(rr.as_bytes());
        }
        if !r.len().is_multiple_of(2) {
            r.push(0);
        }
        r[0] = u8::try_from(r.len()).unwrap();
        r
    }

    /// A tiny ISO: PVD at 16, terminator at 17, root directory at 18, files from 19.
    pub(crate) fn image(volume_id: &str, files: &[(&[u8], Option<&str>, &[u8])]) -> Vec<u8> {
        let mut img = vec![0u8; 2048 * (19 + files.len())];
        let pvd = &mut img[16 * 2048..17 * 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[40..72].fill(b' ');
        pvd[40..40 + volume_id.len()].copy_from_slice(volume_id.as_bytes());
        pvd[128..130].copy_from_slice(&2048u16.to_le_bytes());
        let root = record(&[0], None, 18, 2048, true);
        pvd[156..156 + root.len()].copy_from_slice(&root);
        img[17 * 2048] = 255;
        img[17 * 2048 + 1..17 * 2048 + 6].copy_from_slice(b"CD001");
        let mut dir = record(&[0], None, 18, 2048, true);
        dir.extend(record(&[1], None, 18, 2048, true));
        for (i, (name, rr, data)) in files.iter().enumerate() {
            let extent = 19 + u32::try_from(i).unwrap();
            dir.extend(record(
                name,
                *rr,
                extent,
                u32::try_from(data.len()).unwrap(),
                false,
            ));
            let at = usize::try_from(extent).unwrap() * 2048;
            img[at..at + data.len()].copy_from_slice(data);
        }
        img[18 * 2048..18 * 2048 + dir.len()].copy_from_slice(&dir);
        img
    }

    #[test]
    fn finds_files_by_rock_ridge_and_iso_names() {
        let img = image(
            "cidata",
            &[
                (b"META_DAT.;1", Some("meta-data"), b"local-hostname: a\n"),
                (b"OVF_ENV.XML;1", None, b"<Environment/>"),
            ],
        );
        let mut dev: &[u8] = &img;
        let v = open(&mut dev).unwrap();
        assert_eq!(v.id, "cidata");
        assert_eq!(
            read_root_file(&mut dev, &v, "meta-data", 1024).unwrap(),
            b"local-hostname: a\n"
        );
        assert_eq!(
            read_root_file(&mut dev, &v, "ovf-env.xml", 1024).unwrap(),
            b"<Environment/>"
        );
        assert!(read_root_file(&mut dev, &v, "user-data", 1024).is_none());
        assert!(read_root_file(&mut dev, &v, "ovf-env.xml", 4).is_none());
    }

    #[test]
    fn rejects_other_media_and_survives_corruption() {
        let mut dev: &[u8] = &[0u8; 40_000];
        assert!(open(&mut dev).is_none());
        let img = image("x", &[(b"A.;1", None, b"data")]);
        for at in (16 * 2048..19 * 2048).step_by(7) {
            let mut bad = img.clone();
            bad[at] ^= 0xa5;
            let mut dev: &[u8] = &bad;
            if let Some(v) = open(&mut dev) {
                let _ = read_root_file(&mut dev, &v, "a", 1 << 16);
            }
        }
    }
}
