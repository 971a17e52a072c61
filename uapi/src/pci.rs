//! PCI configuration space (`linux/pci_regs.h`): the registers peerdma reads and writes
//! through the VFIO config region, and the `IORESOURCE_*` flags sysfs reports for them. Offsets are bytes from the start of config space
//! (or of the capability, for capability registers); masks are typed by register width.

/// Size of the standard (type 0 / type 1) header; capabilities live above it.
pub const PCI_STD_HEADER_SIZEOF: u16 = 64;
/// Size of conventional PCI configuration space.
pub const PCI_CFG_SPACE_SIZE: u16 = 256;
/// Size of PCI Express extended configuration space.
pub const PCI_CFG_SPACE_EXP_SIZE: u16 = 4096;
/// Number of standard BARs in a type 0 header.
pub const PCI_STD_NUM_BARS: u32 = 6;
/// 16-bit vendor id register.
pub const PCI_VENDOR_ID: u16 = 0x00;
/// 16-bit device id register.
pub const PCI_DEVICE_ID: u16 = 0x02;

/// 16-bit Command register. Clearing Memory Space Enable here (through VFIO) revokes
/// every dma-buf of the device; setting it again lets importers map again.
pub const PCI_COMMAND: u16 = 0x04;
/// Command bit: respond to I/O space accesses.
pub const PCI_COMMAND_IO: u16 = 0x1;
/// Command bit: Memory Space Enable (the BARs decode).
pub const PCI_COMMAND_MEMORY: u16 = 0x2;
/// Command bit: Bus Master Enable (the device may issue DMA).
pub const PCI_COMMAND_MASTER: u16 = 0x4;
/// Command bit: legacy INTx disabled.
pub const PCI_COMMAND_INTX_DISABLE: u16 = 0x400;

/// 16-bit Status register.
pub const PCI_STATUS: u16 = 0x06;
/// Status bit: the capability list at `PCI_CAPABILITY_LIST` is valid.
pub const PCI_STATUS_CAP_LIST: u16 = 0x10;

/// 32-bit register: the class code in the high 24 bits (base class, subclass,
/// programming interface), the revision id in the low 8.
pub const PCI_CLASS_REVISION: u16 = 0x08;

/// 8-bit Header Type register.
pub const PCI_HEADER_TYPE: u16 = 0x0e;
/// Header type without the multi-function bit (0 = endpoint, 1 = bridge).
pub const PCI_HEADER_TYPE_MASK: u8 = 0x7f;
/// First 32-bit BAR register; BAR n is at `PCI_BASE_ADDRESS_0 + 4 * n`.
pub const PCI_BASE_ADDRESS_0: u16 = 0x10;
/// BAR bit 0: the address space the BAR decodes.
pub const PCI_BASE_ADDRESS_SPACE: u32 = 0x01;
/// BAR space value: I/O ports.
pub const PCI_BASE_ADDRESS_SPACE_IO: u32 = 0x01;
/// BAR space value: memory.
pub const PCI_BASE_ADDRESS_SPACE_MEMORY: u32 = 0x00;
/// Memory BAR bits 2:1: the address width.
pub const PCI_BASE_ADDRESS_MEM_TYPE_MASK: u32 = 0x06;
/// Memory BAR type: 32-bit address.
pub const PCI_BASE_ADDRESS_MEM_TYPE_32: u32 = 0x00;
/// Memory BAR type: 64-bit address (the next BAR holds the upper half).
pub const PCI_BASE_ADDRESS_MEM_TYPE_64: u32 = 0x04;
/// Memory BAR bit 3: prefetchable.
pub const PCI_BASE_ADDRESS_MEM_PREFETCH: u32 = 0x08;
/// 32-bit expansion ROM BAR of a type 0 header.
pub const PCI_ROM_ADDRESS: u16 = 0x30;
/// 8-bit pointer to the first capability.
pub const PCI_CAPABILITY_LIST: u16 = 0x34;

/// Capability register: 8-bit capability id.
pub const PCI_CAP_LIST_ID: u16 = 0;
/// Capability register: 8-bit pointer to the next capability (0 ends the list).
pub const PCI_CAP_LIST_NEXT: u16 = 1;
/// Capability register: 16-bit capability-specific flags.
pub const PCI_CAP_FLAGS: u16 = 2;

/// Capability id: Power Management.
pub const PCI_CAP_ID_PM: u8 = 0x01;
/// Capability id: MSI.
pub const PCI_CAP_ID_MSI: u8 = 0x05;
/// Capability id: vendor specific.
pub const PCI_CAP_ID_VNDR: u8 = 0x09;
/// Capability id: PCI Express.
pub const PCI_CAP_ID_EXP: u8 = 0x10;
/// Capability id: MSI-X.
pub const PCI_CAP_ID_MSIX: u8 = 0x11;
/// Capability id: Advanced Features (conventional PCI FLR).
pub const PCI_CAP_ID_AF: u8 = 0x13;

/// PM capability: 16-bit PM Capabilities register.
pub const PCI_PM_PMC: u16 = 2;
/// PM capability: 16-bit PMCSR (control/status). A write that leaves D0 revokes the
/// device's dma-bufs.
pub const PCI_PM_CTRL: u16 = 4;
/// PMCSR: the PowerState field (0 = D0 ... 3 = D3hot).
pub const PCI_PM_CTRL_STATE_MASK: u16 = 0x0003;
/// PMCSR: the device keeps its state across D3hot -> D0 (no internal reset).
pub const PCI_PM_CTRL_NO_SOFT_RESET: u16 = 0x0008;
/// PMCSR: PME status, write-one-to-clear (a PMCSR write must not set it back by accident).
pub const PCI_PM_CTRL_PME_STATUS: u16 = 0x8000;
/// PMCSR PowerState value D0 (fully on). A PCI PM spec value; `pci_regs.h` does not
/// name it, so the layout test does not check it.
pub const PCI_PM_CTRL_STATE_D0: u16 = 0;
/// PMCSR PowerState value D3hot. A PCI PM spec value; `pci_regs.h` does not name it, so
/// the layout test does not check it.
pub const PCI_PM_CTRL_STATE_D3HOT: u16 = 3;

/// PCIe capability: 16-bit PCIe Capabilities register.
pub const PCI_EXP_FLAGS: u16 = 0x02;
/// PCIe capability: 32-bit Device Capabilities register.
pub const PCI_EXP_DEVCAP: u16 = 0x04;
/// Device Capabilities bit: Function Level Reset supported.
pub const PCI_EXP_DEVCAP_FLR: u32 = 0x1000_0000;
/// PCIe capability: 16-bit Device Control register.
pub const PCI_EXP_DEVCTL: u16 = 0x08;
/// Device Control bit: start a Function Level Reset (endpoints).
pub const PCI_EXP_DEVCTL_BCR_FLR: u16 = 0x8000;

/// AF capability: 8-bit capabilities register.
pub const PCI_AF_CAP: u16 = 3;
/// AF capabilities bit: Transactions Pending status supported.
pub const PCI_AF_CAP_TP: u8 = 0x01;
/// AF capabilities bit: Function Level Reset supported.
pub const PCI_AF_CAP_FLR: u8 = 0x02;
/// AF capability: 8-bit control register.
pub const PCI_AF_CTRL: u16 = 4;
/// AF control bit: start a Function Level Reset.
pub const PCI_AF_CTRL_FLR: u8 = 0x01;
/// AF capability: 8-bit status register.
pub const PCI_AF_STATUS: u16 = 5;
/// AF status bit: transactions pending.
pub const PCI_AF_STATUS_TP: u8 = 0x01;

/// MSI-X capability: 16-bit Message Control register.
pub const PCI_MSIX_FLAGS: u16 = 2;
/// Message Control: table size minus one.
pub const PCI_MSIX_FLAGS_QSIZE: u16 = 0x07ff;
/// Message Control: all vectors masked.
pub const PCI_MSIX_FLAGS_MASKALL: u16 = 0x4000;
/// Message Control: MSI-X enabled.
pub const PCI_MSIX_FLAGS_ENABLE: u16 = 0x8000;
/// MSI-X capability: 32-bit Table Offset/BIR register.
pub const PCI_MSIX_TABLE: u16 = 4;
/// Table register: the BAR (BIR) that holds the MSI-X table.
pub const PCI_MSIX_TABLE_BIR: u32 = 0x0000_0007;
/// Table register: the table's byte offset in that BAR (8-byte aligned).
pub const PCI_MSIX_TABLE_OFFSET: u32 = 0xffff_fff8;
/// MSI-X capability: 32-bit PBA Offset/BIR register.
pub const PCI_MSIX_PBA: u16 = 8;
/// PBA register: the BAR (BIR) that holds the Pending Bit Array.
pub const PCI_MSIX_PBA_BIR: u32 = 0x0000_0007;
/// PBA register: the PBA's byte offset in that BAR (8-byte aligned).
pub const PCI_MSIX_PBA_OFFSET: u32 = 0xffff_fff8;
/// Bytes per MSI-X table entry.
pub const PCI_MSIX_ENTRY_SIZE: u32 = 16;

/// Header type: a PCI-to-PCI bridge (type 1 header).
pub const PCI_HEADER_TYPE_BRIDGE: u8 = 1;
/// Type 1 header: 8-bit secondary bus number.
pub const PCI_SECONDARY_BUS: u16 = 0x19;
/// Type 1 header: 8-bit subordinate (highest) bus number behind the bridge.
pub const PCI_SUBORDINATE_BUS: u16 = 0x1a;

/// PCI Express Capabilities register: the Device/Port type field.
pub const PCI_EXP_FLAGS_TYPE: u16 = 0x00f0;
/// Device/Port type: PCI Express endpoint.
pub const PCI_EXP_TYPE_ENDPOINT: u16 = 0x0;
/// Device/Port type: legacy PCI Express endpoint.
pub const PCI_EXP_TYPE_LEG_END: u16 = 0x1;
/// Device/Port type: root port.
pub const PCI_EXP_TYPE_ROOT_PORT: u16 = 0x4;
/// Device/Port type: switch upstream port.
pub const PCI_EXP_TYPE_UPSTREAM: u16 = 0x5;
/// Device/Port type: switch downstream port.
pub const PCI_EXP_TYPE_DOWNSTREAM: u16 = 0x6;
/// Device/Port type: PCI Express to PCI/PCI-X bridge.
pub const PCI_EXP_TYPE_PCI_BRIDGE: u16 = 0x7;
/// Device/Port type: PCI/PCI-X to PCI Express bridge.
pub const PCI_EXP_TYPE_PCIE_BRIDGE: u16 = 0x8;
/// Device/Port type: root complex integrated endpoint.
pub const PCI_EXP_TYPE_RC_END: u16 = 0x9;

/// Extended capability ID: Access Control Services (ACS).
pub const PCI_EXT_CAP_ID_ACS: u16 = 0x0d;
/// ACS capability: 16-bit ACS Capability register (which controls exist).
pub const PCI_ACS_CAP: u16 = 0x04;
/// ACS capability: 16-bit ACS Control register (which controls are on).
pub const PCI_ACS_CTRL: u16 = 0x06;
/// ACS bit: Source Validation.
pub const PCI_ACS_SV: u16 = 0x0001;
/// ACS bit: Translation Blocking.
pub const PCI_ACS_TB: u16 = 0x0002;
/// ACS bit: P2P Request Redirect.
pub const PCI_ACS_RR: u16 = 0x0004;
/// ACS bit: P2P Completion Redirect.
pub const PCI_ACS_CR: u16 = 0x0008;
/// ACS bit: Upstream Forwarding.
pub const PCI_ACS_UF: u16 = 0x0010;
/// ACS bit: P2P Egress Control.
pub const PCI_ACS_EC: u16 = 0x0020;
/// ACS bit: Direct Translated P2P.
pub const PCI_ACS_DT: u16 = 0x0040;

// ----------------------------------------------------------------------------------------
// Resource flags (`linux/ioport.h`, a kernel-internal header): the third column of sysfs
// `resource`. Not user-space ABI headers, so the layout test cannot check them.

/// Resource flag: I/O port space.
pub const IORESOURCE_IO: u64 = 0x0000_0100;
/// Resource flag: memory space.
pub const IORESOURCE_MEM: u64 = 0x0000_0200;
/// Resource flag: prefetchable memory.
pub const IORESOURCE_PREFETCH: u64 = 0x0000_2000;
/// Resource flag: a 64-bit memory BAR.
pub const IORESOURCE_MEM_64: u64 = 0x0010_0000;
/// Resource flag: the resource is disabled.
pub const IORESOURCE_DISABLED: u64 = 0x1000_0000;
/// Resource flag: no address assigned yet.
pub const IORESOURCE_UNSET: u64 = 0x2000_0000;
