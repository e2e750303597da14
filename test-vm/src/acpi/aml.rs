//! The few AML encodings the DSDT needs (ACPI 6.5 §20, "ACPI Machine Language
//! Specification", and §6.4 resource descriptors).

/// `ZeroOp`.
pub const ZERO_OP: u8 = 0x00;
/// `OneOp`.
pub const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const OP_REGION_OP: u8 = 0x80;
const FIELD_OP: u8 = 0x81;
const METHOD_OP: u8 = 0x14;
const STORE_OP: u8 = 0x70;
const AND_OP: u8 = 0x7b;
const IF_OP: u8 = 0xa0;
const NOTIFY_OP: u8 = 0x86;
const DUAL_NAME_PREFIX: u8 = 0x2e;
/// `Local0Op`.
pub const LOCAL0: u8 = 0x60;
/// `NullName`: an absent `Target`.
const NULL_NAME: u8 = 0x00;
const ROOT_CHAR: u8 = b'\\';

/// Encodes a `PkgLength` for a body of `body_len` bytes (the encoded length counts itself).
#[must_use]
pub fn pkg_length(body_len: usize) -> Vec<u8> {
    if body_len + 1 < 0x40 {
        return vec![u8::try_from(body_len + 1).expect("< 0x40")];
    }
    for extra in 1..=3usize {
        let total = body_len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut bytes = vec![
                u8::try_from(extra << 6).expect("extra <= 3")
                    | u8::try_from(total & 0xf).expect("masked to 4 bits"),
            ];
            for i in 0..extra {
                bytes.push(u8::try_from((total >> (4 + 8 * i)) & 0xff).expect("masked to 8 bits"));
            }
            return bytes;
        }
    }
    panic!("AML object of {body_len} bytes exceeds the 256 MiB PkgLength limit")
}

/// A `NameSeg`: exactly four characters from `[A-Z0-9_]`, padded with `_`.
#[must_use]
pub fn name_seg(name: &str) -> [u8; 4] {
    let mut seg = [b'_'; 4];
    for (slot, byte) in seg.iter_mut().zip(name.bytes()) {
        *slot = byte;
    }
    seg
}

/// The smallest integer encoding of `value`.
#[must_use]
pub fn integer(value: u64) -> Vec<u8> {
    match value {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        v => {
            if let Ok(byte) = u8::try_from(v) {
                vec![BYTE_PREFIX, byte]
            } else if let Ok(word) = u16::try_from(v) {
                [&[WORD_PREFIX][..], &word.to_le_bytes()].concat()
            } else if let Ok(dword) = u32::try_from(v) {
                [&[DWORD_PREFIX][..], &dword.to_le_bytes()].concat()
            } else {
                [&[QWORD_PREFIX][..], &v.to_le_bytes()].concat()
            }
        }
    }
}

/// A NUL-terminated string constant.
#[must_use]
pub fn string(value: &str) -> Vec<u8> {
    let mut bytes = vec![STRING_PREFIX];
    bytes.extend_from_slice(value.as_bytes());
    bytes.push(0);
    bytes
}

/// `EISAID("PNP0501")`: three letters of 5 bits and four hex digits, stored big-endian in
/// a DWord.
#[must_use]
pub fn eisa_id(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    assert!(b.len() == 7, "an EISA id has 7 characters");
    let letter = |c: u8| u32::from(c - 0x40) & 0x1f;
    let hex = u32::from_str_radix(&id[3..], 16).expect("EISA id ends in 4 hex digits");
    let value = (letter(b[0]) << 26) | (letter(b[1]) << 21) | (letter(b[2]) << 16) | hex;
    [&[DWORD_PREFIX][..], &value.to_be_bytes()].concat()
}

/// `Name(NAME, object)`.
#[must_use]
pub fn name(name: &str, object: &[u8]) -> Vec<u8> {
    [&[NAME_OP][..], &name_seg(name), object].concat()
}

/// `Scope(\NAME) { body }` for a root-relative single segment.
#[must_use]
pub fn scope_root(name: &str, body: &[u8]) -> Vec<u8> {
    let mut inner = vec![ROOT_CHAR];
    inner.extend_from_slice(&name_seg(name));
    inner.extend_from_slice(body);
    [&[SCOPE_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `Device(NAME) { body }`.
#[must_use]
pub fn device(name: &str, body: &[u8]) -> Vec<u8> {
    let inner = [&name_seg(name)[..], body].concat();
    [
        &[EXT_OP_PREFIX, DEVICE_OP][..],
        &pkg_length(inner.len()),
        &inner,
    ]
    .concat()
}

/// `Package() { elements }`.
#[must_use]
pub fn package(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut inner =
        vec![u8::try_from(elements.len()).expect("small packages only (< 256 elements)")];
    for element in elements {
        inner.extend_from_slice(element);
    }
    [&[PACKAGE_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `ResourceTemplate() { descriptors }`: a buffer ending with an End Tag.
#[must_use]
pub fn resource_template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut data: Vec<u8> = descriptors.concat();
    data.extend_from_slice(&[0x79, 0x00]); // End Tag, checksum 0 ("treated as correct")
    let size = integer(data.len() as u64);
    let inner = [size, data].concat();
    [&[BUFFER_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `Memory32Fixed(ReadWrite, base, length)` (§6.4.3.4).
#[must_use]
pub fn memory32_fixed(base: u32, length: u32) -> Vec<u8> {
    [
        &[0x86, 0x09, 0x00, 0x01][..],
        &base.to_le_bytes(),
        &length.to_le_bytes(),
    ]
    .concat()
}

/// `Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }` (§6.4.3.6).
#[must_use]
pub fn extended_interrupt(irq: u32) -> Vec<u8> {
    [&[0x89, 0x06, 0x00, 0x03, 0x01][..], &irq.to_le_bytes()].concat()
}

/// `IO(Decode16, base, base, 1, length)` (§6.4.2.5).
#[must_use]
pub fn io_port(base: u16, length: u8) -> Vec<u8> {
    [
        &[0x47, 0x01][..],
        &base.to_le_bytes(),
        &base.to_le_bytes(),
        &[0x01, length],
    ]
    .concat()
}

/// `IRQNoFlags() { irq }` (§6.4.2.1).
#[must_use]
pub fn irq_no_flags(irq: u8) -> Vec<u8> {
    [&[0x22][..], &(1u16 << irq).to_le_bytes()].concat()
}

/// `\\PARENT.CHILD`: an absolute two-segment `NameString` (`DualNamePrefix`).
#[must_use]
pub fn root_path2(parent: &str, child: &str) -> Vec<u8> {
    [
        &[ROOT_CHAR, DUAL_NAME_PREFIX][..],
        &name_seg(parent),
        &name_seg(child),
    ]
    .concat()
}

/// Address space of an `OperationRegion` (§19.6.100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSpace {
    /// `SystemMemory`.
    SystemMemory = 0,
    /// `SystemIO`.
    SystemIo = 1,
}

/// `OperationRegion(NAME, space, offset, length)`.
#[must_use]
pub fn operation_region(name: &str, space: RegionSpace, offset: u64, length: u64) -> Vec<u8> {
    [
        &[EXT_OP_PREFIX, OP_REGION_OP][..],
        &name_seg(name),
        &[space as u8],
        &integer(offset),
        &integer(length),
    ]
    .concat()
}

/// `FieldFlags` access type `DWordAcc`, lock rule `NoLock`, update rule `WriteAsZeros`.
pub const FIELD_DWORD_NOLOCK_WRITE_ZEROS: u8 = 0x03 | (2 << 5);

/// `Field(region, flags) { NAME, bits, ... }` with named fields only (§20.2.5.2). Field
/// bit lengths use the `PkgLength` encoding without counting themselves.
#[must_use]
pub fn field(region: &str, flags: u8, fields: &[(&str, u32)]) -> Vec<u8> {
    let mut inner = name_seg(region).to_vec();
    inner.push(flags);
    for &(name, bits) in fields {
        inner.extend_from_slice(&name_seg(name));
        inner.extend_from_slice(&field_length(bits));
    }
    [
        &[EXT_OP_PREFIX, FIELD_OP][..],
        &pkg_length(inner.len()),
        &inner,
    ]
    .concat()
}

/// A `NamedField` bit length (the `PkgLength` format for a value, not a body).
fn field_length(bits: u32) -> Vec<u8> {
    assert!(bits < 1 << 12, "fields of this DSDT are small");
    if bits < 0x40 {
        vec![u8::try_from(bits).expect("< 0x40")]
    } else {
        vec![
            0x40 | u8::try_from(bits & 0xf).expect("masked"),
            u8::try_from(bits >> 4).expect("< 1 << 12"),
        ]
    }
}

/// `Method(NAME, args, Serialized?) { body }`.
#[must_use]
pub fn method(name: &str, args: u8, serialized: bool, body: &[u8]) -> Vec<u8> {
    assert!(args <= 7, "a method takes at most 7 arguments");
    let flags = args | if serialized { 1 << 3 } else { 0 };
    let inner = [&name_seg(name)[..], &[flags], body].concat();
    [&[METHOD_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `Store(source, target)`.
#[must_use]
pub fn store(source: &[u8], target: &[u8]) -> Vec<u8> {
    [&[STORE_OP][..], source, target].concat()
}

/// `And(a, b)` with no target (its value is the result).
#[must_use]
pub fn and(a: &[u8], b: &[u8]) -> Vec<u8> {
    [&[AND_OP][..], a, b, &[NULL_NAME]].concat()
}

/// `If(predicate) { body }`.
#[must_use]
pub fn if_then(predicate: &[u8], body: &[u8]) -> Vec<u8> {
    let inner = [predicate, body].concat();
    [&[IF_OP][..], &pkg_length(inner.len()), &inner].concat()
}

/// `Notify(object, value)`.
#[must_use]
pub fn notify(object: &[u8], value: u64) -> Vec<u8> {
    [&[NOTIFY_OP][..], object, &integer(value)].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_encodings() {
        assert_eq!(pkg_length(0), vec![1]);
        assert_eq!(pkg_length(0x3e), vec![0x3f]);
        // 0x3f body + 2 length bytes = 0x41 -> 0x41 & 0xf | 1<<6, 0x41 >> 4.
        assert_eq!(pkg_length(0x3f), vec![0x41, 0x04]);
        // 0x1000 body + 3 length bytes = 0x1003: two extra bytes.
        assert_eq!(pkg_length(0x1000), vec![0x83, 0x00, 0x01]);
    }

    #[test]
    fn integers_and_strings() {
        assert_eq!(integer(0), vec![0]);
        assert_eq!(integer(1), vec![1]);
        assert_eq!(integer(5), vec![0x0a, 5]);
        assert_eq!(integer(0x200), vec![0x0b, 0, 2]);
        assert_eq!(integer(0xd000_0000), vec![0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 32).len(), 9);
        assert_eq!(string("AB"), vec![0x0d, b'A', b'B', 0]);
    }

    #[test]
    fn eisa_id_matches_known_value() {
        // EISAID("PNP0501") == 0x0105D041 (stored little-endian).
        assert_eq!(eisa_id("PNP0501"), vec![0x0c, 0x41, 0xd0, 0x05, 0x01]);
    }

    #[test]
    fn resource_descriptors() {
        assert_eq!(memory32_fixed(0xd000_0000, 0x200).len(), 12);
        assert_eq!(extended_interrupt(5), vec![0x89, 6, 0, 3, 1, 5, 0, 0, 0]);
        assert_eq!(io_port(0x3f8, 8), vec![0x47, 1, 0xf8, 3, 0xf8, 3, 1, 8]);
        assert_eq!(irq_no_flags(4), vec![0x22, 0x10, 0x00]);
        let template = resource_template(&[irq_no_flags(4)]);
        assert_eq!(
            template,
            vec![0x11, 0x08, 0x0a, 0x05, 0x22, 0x10, 0x00, 0x79, 0x00]
        );
    }

    #[test]
    fn device_and_scope_framing() {
        let dev = device("COM1", &name("_UID", &integer(0)));
        assert_eq!(&dev[..3], &[0x5b, 0x82, 0x0b]);
        assert_eq!(&dev[3..7], b"COM1");
        let scope = scope_root("_SB", &dev);
        assert_eq!(&scope[..7], &[0x10, 0x13, b'\\', b'_', b'S', b'B', b'_']);
        assert_eq!(
            package(&[integer(5), integer(0)]),
            vec![0x12, 0x05, 0x02, 0x0a, 5, 0]
        );
    }

    #[test]
    fn control_method_encodings() {
        assert_eq!(root_path2("_SB", "PWRB"), b"\\\x2e_SB_PWRB".to_vec());
        assert_eq!(
            operation_region("GDST", RegionSpace::SystemMemory, 0xd100_0000, 4),
            vec![
                0x5b, 0x80, b'G', b'D', b'S', b'T', 0, 0x0c, 0, 0, 0, 0xd1, 0x0a, 4
            ]
        );
        // Field(GDST, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }.
        assert_eq!(
            field("GDST", FIELD_DWORD_NOLOCK_WRITE_ZEROS, &[("GDAT", 32)]),
            vec![
                0x5b, 0x81, 0x0b, b'G', b'D', b'S', b'T', 0x43, b'G', b'D', b'A', b'T', 0x20
            ]
        );
        assert_eq!(field_length(0x40), vec![0x40, 0x04]);
        // Method(_EVT, 1, Serialized) { }.
        assert_eq!(
            method("_EVT", 1, true, &[]),
            vec![0x14, 0x06, b'_', b'E', b'V', b'T', 0x09]
        );
        assert_eq!(
            store(b"GDAT", &[LOCAL0]),
            vec![0x70, b'G', b'D', b'A', b'T', 0x60]
        );
        assert_eq!(and(&[LOCAL0], &integer(1)), vec![0x7b, 0x60, 0x01, 0x00]);
        assert_eq!(if_then(&[ONE_OP], &[ZERO_OP]), vec![0xa0, 0x03, 0x01, 0x00]);
        assert_eq!(
            notify(b"PWRB", 0x80),
            vec![0x86, b'P', b'W', b'R', b'B', 0x0a, 0x80]
        );
    }
}
