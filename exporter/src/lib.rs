//! Export PCI BAR ranges as dma-bufs.
