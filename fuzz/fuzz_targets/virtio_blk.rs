//! Arbitrary bytes as guest memory plus queue parameters drive the virtio-blk request
//! parser: it must never panic, every chain must be returned to the used ring (or rejected
//! with an error), and the used index must advance by exactly the number of completions.
#![no_main]

use libfuzzer_sys::fuzz_target;
use test_vm::devices::virtio_blk::{BlkConfig, MemoryBackend, process_queue};
use test_vm::memory::GuestMemoryMmap;
use test_vm::virtio_queue::{Queue, QueueT};
use test_vm::vm_memory::{Bytes, GuestAddress};

const MEMORY_BYTES: usize = 64 * 1024;
const DESC: u64 = 0x0000;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

fuzz_target!(|data: &[u8]| {
    let Some((&[size_log2, flags, avail_lo, avail_hi], memory_bytes)) = data.split_first_chunk()
    else {
        return;
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_BYTES)])
        .expect("64 KiB of anonymous memory");
    let len = memory_bytes.len().min(MEMORY_BYTES);
    mem.write_slice(&memory_bytes[..len], GuestAddress(0))
        .expect("within memory");
    // The available index comes from the input so the ring can claim 0..=65535 entries.
    mem.write_obj(
        u16::from_le_bytes([avail_lo, avail_hi]),
        GuestAddress(AVAIL + 2),
    )
    .expect("within memory");
    mem.write_obj(0u16, GuestAddress(USED + 2))
        .expect("within memory");

    let size = 1u16 << (size_log2 % 9); // 1..=256
    let mut queue = Queue::new(256).expect("valid maximum");
    queue.set_size(size);
    queue.set_desc_table_address(Some(DESC as u32), Some(0));
    queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    queue.set_used_ring_address(Some(USED as u32), Some(0));
    queue.set_ready(true);
    let mut config = BlkConfig::new(flags & 1 != 0);
    if flags & 2 != 0 {
        config.acked_features |= 1 << 28; // indirect descriptors "negotiated"
    }
    let mut backend = MemoryBackend {
        bytes: vec![0u8; 16 * 512],
    };
    let report = process_queue(&mem, &mut queue, &mut backend, &config);
    let used: u16 = mem.read_obj(GuestAddress(USED + 2)).expect("within memory");
    assert_eq!(usize::from(used), report.completions.len());
    assert_eq!(backend.bytes.len(), 16 * 512);
});
