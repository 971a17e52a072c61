//! Import dma-bufs into other devices.
