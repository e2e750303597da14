//! Just enough ELF64 to find a kernel module's `.modinfo` section.
//!
//! Kernel modules are ELF64 relocatable objects (`ET_REL`). The `.modinfo` section is a
//! sequence of NUL-terminated `key=value` strings (`name=`, `depends=`, `alias=`,
//! `softdep=`, ...), written by `MODULE_INFO()` in `include/linux/module.h`. Every offset
//! and size read from the file is bounds-checked: a malformed module yields an error,
//! never a panic or a large allocation.
//!
//! Layout used (ELF-64 Object File Format 1.5, little-endian only: x86-64):
//!
//! ```text
//! header:  e_ident[16] e_type:u16 e_machine:u16 e_version:u32 e_entry:u64 e_phoff:u64
//!          e_shoff:u64 @0x28  e_flags:u32  e_ehsize:u16  e_phentsize:u16  e_phnum:u16
//!          e_shentsize:u16 @0x3A  e_shnum:u16 @0x3C  e_shstrndx:u16 @0x3E
//! section: sh_name:u32 @0  sh_type:u32 @4  sh_flags:u64  sh_addr:u64  sh_offset:u64 @24
//!          sh_size:u64 @32  sh_link:u32 @40 ...  (64 bytes)
//! ```

use thiserror::Error;

/// Size of an ELF64 section header.
const SECTION_HEADER_SIZE: usize = 64;
/// `SHT_NOBITS`: the section occupies no file space.
const SHT_NOBITS: u32 = 8;
/// `SHN_XINDEX`: the real string table index is in section 0's `sh_link`.
const SHN_XINDEX: u16 = 0xffff;

/// Errors from reading an ELF file.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file.
    #[error("not an ELF file")]
    NotElf,
    /// ELF, but not 64-bit little-endian.
    #[error("unsupported ELF class or byte order (need ELF64 little-endian)")]
    Unsupported,
    /// A header field points outside the file.
    #[error("malformed ELF: {what} at offset {offset} is out of bounds")]
    OutOfBounds {
        /// The structure being read.
        what: &'static str,
        /// Where.
        offset: u64,
    },
    /// Section header entries are not 64 bytes.
    #[error("malformed ELF: section header size {size}")]
    BadSectionHeaderSize {
        /// The size found.
        size: u16,
    },
}

fn read<const N: usize>(
    data: &[u8],
    offset: usize,
    what: &'static str,
) -> Result<[u8; N], ElfError> {
    offset
        .checked_add(N)
        .and_then(|end| data.get(offset..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(ElfError::OutOfBounds {
            what,
            offset: offset as u64,
        })
}

fn u16_at(data: &[u8], offset: usize, what: &'static str) -> Result<u16, ElfError> {
    read::<2>(data, offset, what).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], offset: usize, what: &'static str) -> Result<u32, ElfError> {
    read::<4>(data, offset, what).map(u32::from_le_bytes)
}

fn u64_at(data: &[u8], offset: usize, what: &'static str) -> Result<u64, ElfError> {
    read::<8>(data, offset, what).map(u64::from_le_bytes)
}

fn slice<'a>(
    data: &'a [u8],
    offset: u64,
    size: u64,
    what: &'static str,
) -> Result<&'a [u8], ElfError> {
    let oob = ElfError::OutOfBounds { what, offset };
    let start = usize::try_from(offset).map_err(|_| oob.clone())?;
    let len = usize::try_from(size).map_err(|_| oob.clone())?;
    let end = start.checked_add(len).ok_or(oob.clone())?;
    data.get(start..end).ok_or(oob)
}

struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

fn section(data: &[u8], shoff: u64, index: usize) -> Result<Section, ElfError> {
    let what = "section header";
    let base = usize::try_from(shoff)
        .ok()
        .and_then(|s| {
            index
                .checked_mul(SECTION_HEADER_SIZE)
                .and_then(|o| o.checked_add(s))
        })
        .ok_or(ElfError::OutOfBounds {
            what,
            offset: shoff,
        })?;
    Ok(Section {
        name: u32_at(data, base, what)?,
        kind: u32_at(data, base + 4, what)?,
        offset: u64_at(data, base + 24, what)?,
        size: u64_at(data, base + 32, what)?,
        link: u32_at(data, base + 40, what)?,
    })
}

/// Returns the content of the section called `wanted`, or `None` if there is none.
pub fn find_section<'a>(data: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, ElfError> {
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    // EI_CLASS = ELFCLASS64 (2), EI_DATA = ELFDATA2LSB (1).
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err(ElfError::Unsupported);
    }
    let shoff = u64_at(data, 0x28, "e_shoff")?;
    let shentsize = u16_at(data, 0x3a, "e_shentsize")?;
    let mut shnum = u64::from(u16_at(data, 0x3c, "e_shnum")?);
    let mut shstrndx = u32::from(u16_at(data, 0x3e, "e_shstrndx")?);
    if shoff == 0 {
        return Ok(None);
    }
    if usize::from(shentsize) != SECTION_HEADER_SIZE {
        return Err(ElfError::BadSectionHeaderSize { size: shentsize });
    }
    // Extended numbering: counts that do not fit live in section 0.
    let first = section(data, shoff, 0)?;
    if shnum == 0 {
        shnum = first.size;
    }
    if shstrndx == u32::from(SHN_XINDEX) {
        shstrndx = first.link;
    }
    // Every header must be inside the file, which also bounds the loop.
    let table_len = shnum
        .checked_mul(SECTION_HEADER_SIZE as u64)
        .ok_or(ElfError::OutOfBounds {
            what: "section table",
            offset: shoff,
        })?;
    slice(data, shoff, table_len, "section table")?;
    let shnum = usize::try_from(shnum).map_err(|_| ElfError::OutOfBounds {
        what: "section table",
        offset: shoff,
    })?;
    let strtab_index = usize::try_from(shstrndx).map_err(|_| ElfError::OutOfBounds {
        what: "e_shstrndx",
        offset: 0x3e,
    })?;
    if strtab_index >= shnum {
        return Err(ElfError::OutOfBounds {
            what: "e_shstrndx",
            offset: 0x3e,
        });
    }
    let strtab = section(data, shoff, strtab_index)?;
    let names = slice(data, strtab.offset, strtab.size, "section name table")?;
    for index in 0..shnum {
        let header = section(data, shoff, index)?;
        let name_start = usize::try_from(header.name).unwrap_or(usize::MAX);
        let Some(name_bytes) = names.get(name_start..) else {
            continue;
        };
        let name = name_bytes.split(|b| *b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            if header.kind == SHT_NOBITS {
                return Ok(Some(&[]));
            }
            return slice(data, header.offset, header.size, "section").map(Some);
        }
    }
    Ok(None)
}

/// Splits a `.modinfo` section into `(key, value)` pairs, in order. Entries without `=` and
/// padding NULs are skipped; invalid UTF-8 is replaced.
pub fn parse_modinfo(section: &[u8]) -> Vec<(String, String)> {
    section
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|entry| {
            let text = String::from_utf8_lossy(entry);
            let (key, value) = text.split_once('=')?;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

/// Builds a minimal ELF64 relocatable object with the given sections (test fixtures and
/// fuzz seeds): a NULL section, the named sections, then `.shstrtab`.
#[cfg(test)]
pub(crate) fn build_elf(sections: &[(&str, &[u8])]) -> Vec<u8> {
    let mut names = vec![0u8];
    let mut name_offsets = Vec::new();
    for (name, _) in sections.iter().copied().chain([(".shstrtab", &[][..])]) {
        name_offsets.push(names.len() as u32);
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    let mut data = vec![0u8; 64];
    let mut placed = Vec::new();
    for (_, content) in sections {
        placed.push((data.len() as u64, content.len() as u64));
        data.extend_from_slice(content);
    }
    placed.push((data.len() as u64, names.len() as u64));
    data.extend_from_slice(&names);
    while !data.len().is_multiple_of(8) {
        data.push(0);
    }
    let shoff = data.len() as u64;
    data.extend_from_slice(&[0u8; 64]); // NULL section
    for (i, (offset, size)) in placed.iter().enumerate() {
        let mut header = [0u8; 64];
        header[0..4].copy_from_slice(&name_offsets[i].to_le_bytes());
        let kind: u32 = if i + 1 == placed.len() { 3 } else { 1 }; // SHT_STRTAB / SHT_PROGBITS
        header[4..8].copy_from_slice(&kind.to_le_bytes());
        header[24..32].copy_from_slice(&offset.to_le_bytes());
        header[32..40].copy_from_slice(&size.to_le_bytes());
        data.extend_from_slice(&header);
    }
    let shnum = (placed.len() + 1) as u16;
    data[0..4].copy_from_slice(b"\x7fELF");
    data[4] = 2; // ELFCLASS64
    data[5] = 1; // little-endian
    data[6] = 1; // EV_CURRENT
    data[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    data[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    data[20..24].copy_from_slice(&1u32.to_le_bytes());
    data[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    data[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    data[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    data[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
    data[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_modinfo_in_a_generated_object() {
        let info = b"license=GPL\0depends=a,b\0name=x\0\0\0";
        let elf = build_elf(&[(".text", b"\x90\x90"), (".modinfo", info)]);
        assert_eq!(find_section(&elf, ".modinfo").unwrap(), Some(&info[..]));
        assert_eq!(find_section(&elf, ".nope").unwrap(), None);
        let pairs = parse_modinfo(info);
        assert_eq!(pairs[1], ("depends".to_owned(), "a,b".to_owned()));
        assert_eq!(pairs.len(), 3);
    }

    #[test]
    fn rejects_non_elf_and_wrong_class() {
        assert_eq!(find_section(b"hello", ".modinfo"), Err(ElfError::NotElf));
        let mut elf = build_elf(&[(".modinfo", b"a=b\0")]);
        elf[4] = 1;
        assert_eq!(find_section(&elf, ".modinfo"), Err(ElfError::Unsupported));
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        let elf = build_elf(&[(".modinfo", b"a=b\0")]);
        // Truncations at every length.
        for len in 0..elf.len() {
            let _ = find_section(&elf[..len], ".modinfo");
        }
        // Section table pointing past the end.
        let mut bad = elf.clone();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            find_section(&bad, ".modinfo"),
            Err(ElfError::OutOfBounds { .. })
        ));
        // Huge section count.
        let mut bad = elf.clone();
        bad[0x3c..0x3e].copy_from_slice(&0xfffeu16.to_le_bytes());
        assert!(matches!(
            find_section(&bad, ".modinfo"),
            Err(ElfError::OutOfBounds { .. })
        ));
        // Wrong entry size.
        let mut bad = elf.clone();
        bad[0x3a..0x3c].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(
            find_section(&bad, ".modinfo"),
            Err(ElfError::BadSectionHeaderSize { size: 40 })
        );
        // A section whose size runs past the end.
        let mut bad = elf.clone();
        let shoff = u64::from_le_bytes(bad[0x28..0x30].try_into().unwrap()) as usize;
        bad[shoff + 64 + 32..shoff + 64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            find_section(&bad, ".modinfo"),
            Err(ElfError::OutOfBounds { .. })
        ));
        // String table index out of range.
        let mut bad = elf;
        bad[0x3e..0x40].copy_from_slice(&9u16.to_le_bytes());
        assert!(matches!(
            find_section(&bad, ".modinfo"),
            Err(ElfError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn flipped_bytes_never_panic() {
        let elf = build_elf(&[(".text", &[0x90; 16]), (".modinfo", b"name=x\0depends=\0")]);
        for i in 0..elf.len() {
            for value in [0x00, 0xff, 0x7f] {
                let mut bad = elf.clone();
                bad[i] = value;
                let _ = find_section(&bad, ".modinfo");
            }
        }
    }
}
