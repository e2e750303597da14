//! Arbitrary bytes as guest memory plus queue parameters drive the virtio-vsock tx parser
//! and the rx path: no panic, every tx chain is returned to the used ring, and the host
//! side stays within its bounds (buffered bytes, control packets, connections).
#![no_main]

use libfuzzer_sys::fuzz_target;
use test_vm::devices::vsock::muxer::{
    BUFFER_BYTES, MAX_CONNECTIONS, MAX_CONTROL_PACKETS, VsockMuxer,
};
use test_vm::devices::vsock::{GUEST_CID, VsockDevice};
use test_vm::memory::GuestMemoryMmap;
use test_vm::virtio_queue::{Queue, QueueT};
use test_vm::vm_memory::{Bytes, GuestAddress};

const MEMORY_BYTES: usize = 64 * 1024;

fn queue(size: u16, desc: u64, avail: u64, used: u64) -> Queue {
    let mut queue = Queue::new(256).expect("valid maximum");
    queue.set_size(size);
    queue.set_desc_table_address(Some(desc as u32), Some(0));
    queue.set_avail_ring_address(Some(avail as u32), Some(0));
    queue.set_used_ring_address(Some(used as u32), Some(0));
    queue.set_ready(true);
    queue
}

fuzz_target!(|data: &[u8]| {
    let Some((&[size_log2, tx_lo, tx_hi, rx_lo, rx_hi], memory_bytes)) = data.split_first_chunk()
    else {
        return;
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY_BYTES)])
        .expect("64 KiB of anonymous memory");
    let len = memory_bytes.len().min(MEMORY_BYTES);
    mem.write_slice(&memory_bytes[..len], GuestAddress(0))
        .expect("within memory");
    // tx rings at 0x0000/0x1000/0x2000, rx rings at 0x3000/0x4000/0x5000.
    mem.write_obj(u16::from_le_bytes([tx_lo, tx_hi]), GuestAddress(0x1002))
        .expect("within memory");
    mem.write_obj(u16::from_le_bytes([rx_lo, rx_hi]), GuestAddress(0x4002))
        .expect("within memory");
    mem.write_obj(0u16, GuestAddress(0x2002)).expect("within memory");
    mem.write_obj(0u16, GuestAddress(0x5002)).expect("within memory");
    let size = 1u16 << (size_log2 % 9);
    let mut tx = queue(size, 0x0000, 0x1000, 0x2000);
    let mut rx = queue(size, 0x3000, 0x4000, 0x5000);

    let dir = tempfile::tempdir().expect("temporary directory");
    let muxer = VsockMuxer::bind(GUEST_CID, &dir.path().join("v.sock")).expect("bind");
    let mut device = VsockDevice::new(GUEST_CID, muxer);
    let report = device.process_tx(&mem, &mut tx);
    let used: u16 = mem.read_obj(GuestAddress(0x2002)).expect("within memory");
    assert_eq!(usize::from(used), report.used);
    let _ = device.fill_rx(&mem, &mut rx);
    assert!(device.muxer.buffered_bytes() <= BUFFER_BYTES as usize * MAX_CONNECTIONS);
    assert!(device.muxer.control_len() <= MAX_CONTROL_PACKETS);
    assert!(device.muxer.connection_count() <= MAX_CONNECTIONS);
});
