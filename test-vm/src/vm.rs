//! The KVM VM: memory slots, in-kernel irqchip and PIT, irqfds.
//!
//! The only `unsafe` in the crate lives here: registering guest RAM with KVM.

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_ADDR;
use crate::memory::GuestMemoryMmap;

/// Errors while creating the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("`{ioctl}` failed")]
    Ioctl {
        /// Which ioctl.
        ioctl: &'static str,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// An eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
}

fn ioctl(name: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Ioctl {
        ioctl: name,
        source,
    }
}

/// An open VM with its RAM registered.
#[derive(Debug)]
pub struct Vm {
    /// The /dev/kvm handle.
    pub kvm: Kvm,
    /// The VM handle.
    pub fd: VmFd,
}

impl Vm {
    /// Opens /dev/kvm, creates a VM with an in-kernel irqchip (PIC, IOAPIC, LAPICs) and
    /// PIT, and registers `memory`.
    ///
    /// # Errors
    ///
    /// [`VmError`].
    pub fn create(memory: &GuestMemoryMmap) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(ioctl("open /dev/kvm"))?;
        let fd = kvm.create_vm().map_err(ioctl("KVM_CREATE_VM"))?;
        fd.set_tss_address(KVM_TSS_ADDR)
            .map_err(ioctl("KVM_SET_TSS_ADDR"))?;
        fd.create_irq_chip().map_err(ioctl("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(ioctl("KVM_CREATE_PIT2"))?;
        for (slot, region) in memory.iter().enumerate() {
            let region_descriptor = kvm_userspace_memory_region {
                slot: u32::try_from(slot).expect("one region"),
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
                flags: 0,
            };
            // SAFETY: `userspace_addr..+memory_size` is the live anonymous mapping owned by
            // `region`, which `memory` keeps alive: the caller holds the GuestMemoryMmap (and
            // its Arc'ed regions) for as long as the VM runs, since `Runner` owns both and
            // drops the VM first. The slot ranges do not overlap (one region per slot).
            unsafe { fd.set_user_memory_region(region_descriptor) }
                .map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        }
        Ok(Self { kvm, fd })
    }

    /// An eventfd registered as an irqfd on `gsi`.
    ///
    /// # Errors
    ///
    /// [`VmError`].
    pub fn irq_line(&self, gsi: u32) -> Result<EventFd, VmError> {
        let event = EventFd::new(libc::EFD_NONBLOCK).map_err(VmError::EventFd)?;
        self.fd
            .register_irqfd(&event, gsi)
            .map_err(ioctl("KVM_IRQFD"))?;
        Ok(event)
    }
}
