//! Test flags from the hypervisor when the boot loader's command line cannot carry them:
//! a firmware boot of the whole disk (SYSLINUX or systemd-boot read their own
//! configuration), where `jeos test` starts QEMU with
//! `-smbios type=11,value=jeos.test=1,value=jeos.protocol=/dev/ttyS1`. SMBIOS type 11 (OEM
//! Strings, DMTF DSP0134 §7.12) reaches Linux through SeaBIOS and OVMF alike, and the kernel
//! exposes the raw table at `/sys/firmware/dmi/tables/DMI` without any module.
//!
//! Only words starting with `jeos.` are taken; the parser never reads past the table.

/// Where the kernel exposes the SMBIOS structure table.
pub const DMI_TABLE: &str = "/sys/firmware/dmi/tables/DMI";
/// SMBIOS structure type "OEM Strings".
const OEM_STRINGS: u8 = 11;
/// SMBIOS structure type "End-of-Table".
const END_OF_TABLE: u8 = 127;

/// The `jeos.*` words of every OEM Strings structure in `table`.
pub fn jeos_words(table: &[u8]) -> Vec<String> {
    let mut words = Vec::new();
    let mut at = 0usize;
    while let (Some(&kind), Some(&length)) = (table.get(at), table.get(at + 1)) {
        let length = usize::from(length);
        if length < 4 {
            break;
        }
        let Some(strings_start) = at.checked_add(length).filter(|&s| s <= table.len()) else {
            break;
        };
        // The string set ends with two NULs (a structure without strings has just those).
        let rest = &table[strings_start..];
        let Some(end) = rest.windows(2).position(|w| w == [0, 0]) else {
            break;
        };
        if kind == OEM_STRINGS {
            for text in rest[..end].split(|&b| b == 0) {
                let text = String::from_utf8_lossy(text);
                words.extend(
                    text.split_whitespace()
                        .filter(|w| w.starts_with("jeos."))
                        .map(str::to_owned),
                );
            }
        }
        if kind == END_OF_TABLE {
            break;
        }
        at = strings_start + end + 2;
    }
    words
}

/// The `jeos.*` OEM strings of this machine, joined by spaces (empty if none).
pub fn read_jeos_words() -> String {
    std::fs::read(DMI_TABLE)
        .map(|t| jeos_words(&t).join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn structure(kind: u8, strings: &[&str]) -> Vec<u8> {
        let mut out = vec![kind, 5, 0, 0, u8::try_from(strings.len()).unwrap()];
        for s in strings {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        if strings.is_empty() {
            out.push(0);
        }
        out.push(0);
        out
    }

    #[test]
    fn reads_jeos_oem_strings_only() {
        let mut table = structure(1, &["QEMU", "Standard PC"]);
        table.extend(structure(
            11,
            &["jeos.test=1", "other", "jeos.protocol=/dev/ttyS1"],
        ));
        table.extend(structure(0, &[]));
        table.extend(structure(127, &[]));
        table.extend(structure(11, &["jeos.after-end=1"]));
        assert_eq!(
            jeos_words(&table),
            ["jeos.test=1", "jeos.protocol=/dev/ttyS1"]
        );
    }

    #[test]
    fn truncated_tables_stop_safely() {
        let table = structure(11, &["jeos.test=1"]);
        for cut in 0..table.len() {
            let _ = jeos_words(&table[..cut]);
        }
        assert!(jeos_words(&[11, 2, 0, 0]).is_empty());
        assert!(jeos_words(&[11, 200, 0, 0]).is_empty());
    }
}
