//! One end of a stream to or from another host (RDMA, a NIC): what it is
//! ([`LocalSpec`]) and, for a BAR, its endpoint opened with the offset checked
//! ([`open_bar`]); each path then sizes, maps and registers the span its own way.

use peerdma_exporter::{AccessPath, OpenOptions};

use crate::{page_align_check, CopyError, Endpoint, EndpointSpec, Side, SpanField};

/// What one end of a stream to or from another host is.
#[derive(Clone, Debug)]
pub enum LocalSpec {
    /// Host memory, allocated for the stream.
    Host,
    /// A span of a device's BAR (through VFIO).
    Bar(EndpointSpec),
}

/// Opens the BAR of `spec` for `side` and checks its offset (page-aligned, inside the
/// BAR). Returns the endpoint and the device's page size.
///
/// # Errors
///
/// The endpoint's open errors; [`CopyError::Unaligned`] or [`CopyError::NoRoom`] for
/// the offset.
pub(crate) fn open_bar(
    spec: &EndpointSpec,
    side: Side,
    access: AccessPath,
) -> Result<(Endpoint, u64), CopyError> {
    let ep = Endpoint::open(
        spec,
        OpenOptions {
            access,
            ..OpenOptions::default()
        },
    )?;
    let page = ep.device.page_size();
    let field = match side {
        Side::Src => SpanField::SrcOffset,
        Side::Dst => SpanField::DstOffset,
    };
    let bar_size = ep.bar.size();
    page_align_check(field, ep.offset, page, |o| o < bar_size)?;
    Ok((ep, page))
}
