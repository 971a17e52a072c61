//! Showing a framebuffer on a connector: atomic mode setting where the driver offers
//! it (`DRM_CLIENT_CAP_ATOMIC`), legacy `SETCRTC` otherwise; the previous
//! configuration is restored on drop.

use std::collections::HashMap;
use std::sync::Arc;

use drm::control::{
    atomic::AtomicModeReq, connector, crtc, plane, property, AtomicCommitFlags, ClipRect,
    Device as _, Mode, RawResourceHandle,
};
use drm::{ClientCapability, Device as _};
use peerdma_exporter::{RevokeReason, RevokeState};
use rustix::io::Errno;

use super::card::Card;
use super::error::{Error, Result};
use super::framebuffer::{FbLayout, Framebuffer};
use super::gem::Gem;

/// How the scanout was set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeSetting {
    /// One atomic commit of the connector, CRTC and primary plane.
    Atomic,
    /// `DRM_IOCTL_MODE_SETCRTC`.
    Legacy,
}

/// What is being shown where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanoutInfo {
    /// The connector's name (`Virtual-1`, `DP-2`).
    pub connector: String,
    /// The CRTC id.
    pub crtc: u32,
    /// The mode's size in pixels.
    pub mode: (u16, u16),
    /// The mode's refresh rate in Hz.
    pub refresh_hz: u32,
    /// How it was set.
    pub setting: ModeSetting,
}

/// What [`Scanout::watch`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanoutEvent {
    /// Nothing changed.
    Unchanged,
    /// The buffer was revoked: the driver dropped its mapping, the display no longer
    /// reads the BAR.
    Revoked(RevokeReason),
    /// The buffer is live again and shown again (the driver mapped it anew).
    Restored,
}

/// The configuration found before showing, put back on drop.
#[derive(Debug)]
enum Saved {
    Atomic {
        /// (object, property, value) of the plane's, CRTC's and connector's properties
        /// this scanout sets.
        values: Vec<(RawResourceHandle, property::Handle, u64)>,
        /// The CRTC's mode (its MODE_ID blob may not outlive the state that held it).
        mode: Option<Mode>,
        mode_id: property::Handle,
    },
    Legacy {
        info: crtc::Info,
        connectors: Vec<connector::Handle>,
    },
}

/// Property ids and values of one KMS object, by name.
struct Props(HashMap<String, (property::Handle, u64)>);

impl Props {
    fn of<H: drm::control::ResourceHandle>(card: &Card, h: H) -> Result<Props> {
        let set = card
            .get_properties(h)
            .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_OBJ_GETPROPERTIES", &e))?;
        let (ids, values) = set.as_props_and_values();
        let mut map = HashMap::new();
        for (id, value) in ids.iter().zip(values) {
            let info = card
                .get_property(*id)
                .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETPROPERTY", &e))?;
            map.insert(info.name().to_string_lossy().into_owned(), (*id, *value));
        }
        Ok(Props(map))
    }

    fn get(&self, card: &Card, name: &'static str) -> Result<(property::Handle, u64)> {
        self.0.get(name).copied().ok_or(Error::Ioctl {
            card: card.describe(),
            op: name,
            errno: Errno::NOENT,
        })
    }
}

/// Where to show: connector, CRTC, mode and (atomic) primary plane.
#[derive(Clone, Debug)]
struct Target {
    connector: connector::Handle,
    connector_name: String,
    crtc: crtc::Handle,
    mode: Mode,
    plane: Option<plane::Handle>,
}

/// A framebuffer on screen; the previous configuration comes back on drop.
#[derive(Debug)]
pub struct Scanout {
    card: Card,
    fb: Framebuffer,
    target: Target,
    setting: ModeSetting,
    saved: Option<Saved>,
    revoked: bool,
}

const DRM_PLANE_TYPE_PRIMARY: u64 = 1;

impl Scanout {
    /// Shows `fb` (an imported buffer's framebuffer) on the first connected
    /// connector, in a mode the framebuffer covers (its own size when the connector
    /// offers it).
    ///
    /// # Errors
    ///
    /// [`Error::NoDisplay`] when no connected connector has a mode that fits;
    /// [`Error::Revoked`] when the commit answers ENODEV (the buffer is revoked);
    /// [`Error::Ioctl`] for other failed ioctls.
    pub fn show(fb: Framebuffer) -> Result<Scanout> {
        Scanout::show_with(fb, None)
    }

    /// [`show`](Self::show) with a given kind of mode setting (`None`: atomic where the
    /// driver offers it). Legacy works on every KMS driver; atomic needs
    /// `DRM_CLIENT_CAP_ATOMIC`.
    ///
    /// # Errors
    ///
    /// As [`show`](Self::show); [`Error::Ioctl`] (`DRM_IOCTL_SET_CLIENT_CAP`) when
    /// atomic is asked for and the driver refuses it.
    pub fn show_with(fb: Framebuffer, setting: Option<ModeSetting>) -> Result<Scanout> {
        let card = fb.gem().card().clone();
        let _ = card.set_client_capability(ClientCapability::UniversalPlanes, true);
        let atomic = match setting {
            Some(ModeSetting::Legacy) => false,
            Some(ModeSetting::Atomic) => {
                card.set_client_capability(ClientCapability::Atomic, true)
                    .map_err(|e| card.ioctl_error("DRM_IOCTL_SET_CLIENT_CAP(ATOMIC)", &e))?;
                true
            }
            None => card
                .set_client_capability(ClientCapability::Atomic, true)
                .is_ok(),
        };
        let mut target = find_target(&card, fb.layout())?;
        let setting = if atomic {
            target.plane = Some(primary_plane(&card, target.crtc)?);
            ModeSetting::Atomic
        } else {
            ModeSetting::Legacy
        };
        let saved = save(&card, &target, setting)?;
        let s = Scanout {
            card,
            fb,
            target,
            setting,
            saved: Some(saved),
            revoked: false,
        };
        s.commit(s.fb.handle())?;
        s.mark_dirty()?;
        Ok(s)
    }

    /// What is shown where.
    pub fn info(&self) -> ScanoutInfo {
        ScanoutInfo {
            connector: self.target.connector_name.clone(),
            crtc: u32::from(self.target.crtc),
            mode: self.target.mode.size(),
            refresh_hz: self.target.mode.vrefresh(),
            setting: self.setting,
        }
    }

    /// The framebuffer shown.
    pub fn framebuffer(&self) -> &Framebuffer {
        &self.fb
    }

    /// Tells the driver the whole framebuffer changed (`DRM_IOCTL_MODE_DIRTYFB`), for
    /// drivers that copy or flush on damage; drivers without it (ENOSYS) need nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Revoked`] for ENODEV, [`Error::Ioctl`] for other errnos.
    pub fn mark_dirty(&self) -> Result<()> {
        let l = self.fb.layout();
        let clip = ClipRect::new(
            0,
            0,
            l.width.min(u32::from(u16::MAX)) as u16,
            l.height.min(u32::from(u16::MAX)) as u16,
        );
        match self.card.dirty_framebuffer(self.fb.handle(), &[clip]) {
            Ok(()) => Ok(()),
            Err(e) => match Errno::from_io_error(&e) {
                Some(Errno::NOSYS) | Some(Errno::OPNOTSUPP) => Ok(()),
                Some(Errno::NODEV) => Err(self.revoked_error(None)),
                _ => Err(self.card.ioctl_error("DRM_IOCTL_MODE_DIRTYFB", &e)),
            },
        }
    }

    /// Follows the exporter's revoke state (from
    /// [`DmaBuf::state`](peerdma_exporter::DmaBuf::state)): reports a revoke once, and
    /// once the buffer is live again shows it through a new framebuffer, which makes
    /// the driver map the buffer again.
    ///
    /// # Errors
    ///
    /// As [`show`](Self::show), when showing it again fails ([`Error::Revoked`] when
    /// the driver still finds it revoked).
    pub fn watch(&mut self, state: RevokeState) -> Result<ScanoutEvent> {
        match (state, self.revoked) {
            (RevokeState::Revoked(r), false) => {
                self.revoked = true;
                Ok(ScanoutEvent::Revoked(r))
            }
            (RevokeState::Live, true) => {
                self.show_again()?;
                self.revoked = false;
                Ok(ScanoutEvent::Restored)
            }
            _ => Ok(ScanoutEvent::Unchanged),
        }
    }

    /// Shows the same buffer through a new framebuffer (the driver's prepare step maps
    /// the imported buffer again), then removes the old one.
    ///
    /// # Errors
    ///
    /// As [`show`](Self::show).
    pub fn show_again(&mut self) -> Result<()> {
        let gem: Arc<Gem> = self.fb.gem().clone();
        let fb = Framebuffer::new(gem, *self.fb.layout())?;
        self.commit(fb.handle())?;
        self.fb = fb;
        self.mark_dirty()
    }

    /// Puts back the configuration found before [`show`](Self::show) (also done on
    /// drop, where a failure is ignored).
    ///
    /// # Errors
    ///
    /// [`Error::Ioctl`] when the restoring commit or SETCRTC fails.
    pub fn restore(&mut self) -> Result<()> {
        let Some(saved) = self.saved.take() else {
            return Ok(());
        };
        let card = &self.card;
        match saved {
            Saved::Legacy { info, connectors } => card
                .set_crtc(
                    self.target.crtc,
                    info.framebuffer(),
                    info.position(),
                    &connectors,
                    info.mode(),
                )
                .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_SETCRTC (restore)", &e)),
            Saved::Atomic {
                values,
                mode,
                mode_id,
            } => {
                let mut req = AtomicModeReq::new();
                for (obj, prop, value) in values {
                    req.add_raw_property(obj, prop, value);
                }
                let blob = match mode {
                    Some(m) => Some(mode_blob(card, &m)?),
                    None => None,
                };
                req.add_raw_property(self.target.crtc.into(), mode_id, blob.unwrap_or(0));
                let r = card
                    .atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)
                    .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_ATOMIC (restore)", &e));
                if let Some(b) = blob {
                    let _ = card.destroy_property_blob(b);
                }
                r
            }
        }
    }

    fn commit(&self, fb: drm::control::framebuffer::Handle) -> Result<()> {
        let card = &self.card;
        let t = &self.target;
        let (w, h) = t.mode.size();
        let r = match self.setting {
            ModeSetting::Legacy => card
                .set_crtc(t.crtc, Some(fb), (0, 0), &[t.connector], Some(t.mode))
                .map_err(|e| (e, "DRM_IOCTL_MODE_SETCRTC")),
            ModeSetting::Atomic => {
                let plane = t.plane.expect("atomic targets have a plane");
                let pp = Props::of(card, plane)?;
                let cp = Props::of(card, t.crtc)?;
                let kp = Props::of(card, t.connector)?;
                let mut req = AtomicModeReq::new();
                let blob = mode_blob(card, &t.mode)?;
                let c: u64 = u32::from(t.crtc).into();
                req.add_raw_property(t.connector.into(), kp.get(card, "CRTC_ID")?.0, c);
                req.add_raw_property(t.crtc.into(), cp.get(card, "MODE_ID")?.0, blob);
                req.add_raw_property(t.crtc.into(), cp.get(card, "ACTIVE")?.0, 1);
                let p: RawResourceHandle = plane.into();
                for (name, value) in [
                    ("FB_ID", u64::from(u32::from(fb))),
                    ("CRTC_ID", c),
                    ("SRC_X", 0),
                    ("SRC_Y", 0),
                    ("SRC_W", u64::from(w) << 16),
                    ("SRC_H", u64::from(h) << 16),
                    ("CRTC_X", 0),
                    ("CRTC_Y", 0),
                    ("CRTC_W", u64::from(w)),
                    ("CRTC_H", u64::from(h)),
                ] {
                    req.add_raw_property(p, pp.get(card, name)?.0, value);
                }
                let r = card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req);
                let _ = card.destroy_property_blob(blob);
                r.map_err(|e| (e, "DRM_IOCTL_MODE_ATOMIC"))
            }
        };
        r.map_err(|(e, op)| match Errno::from_io_error(&e) {
            Some(Errno::NODEV) => self.revoked_error(None),
            _ => card.ioctl_error(op, &e),
        })
    }

    fn revoked_error(&self, reason: Option<RevokeReason>) -> Error {
        Error::Revoked {
            card: self.card.describe(),
            exporter: self.fb.gem().exporter(),
            reason,
            fix: "the display lost the buffer; once the exporter's memory decode is back on, \
                  Scanout::watch (or show_again) maps and shows it again"
                .into(),
        }
    }
}

impl Drop for Scanout {
    fn drop(&mut self) {
        let _ = self.restore();
    }
}

fn mode_blob(card: &Card, mode: &Mode) -> Result<u64> {
    match card.create_property_blob(mode) {
        Ok(property::Value::Blob(id)) => Ok(id),
        Ok(_) => Err(Error::Ioctl {
            card: card.describe(),
            op: "DRM_IOCTL_MODE_CREATEPROPBLOB",
            errno: Errno::INVAL,
        }),
        Err(e) => Err(card.ioctl_error("DRM_IOCTL_MODE_CREATEPROPBLOB", &e)),
    }
}

fn connector_name(info: &connector::Info) -> String {
    format!("{}-{}", info.interface().as_str(), info.interface_id())
}

/// The first connected connector with a mode the framebuffer covers (its own size
/// first), and a CRTC that can drive it.
fn find_target(card: &Card, layout: &FbLayout) -> Result<Target> {
    let res = card
        .resource_handles()
        .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETRESOURCES", &e))?;
    let mut seen = Vec::new();
    for &conn in res.connectors() {
        let info = card
            .get_connector(conn, true)
            .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETCONNECTOR", &e))?;
        let name = connector_name(&info);
        if info.state() != connector::State::Connected {
            seen.push(format!("{name} (not connected)"));
            continue;
        }
        let fits = |m: &&Mode| {
            let (w, h) = m.size();
            u32::from(w) <= layout.width && u32::from(h) <= layout.height
        };
        let exact = info.modes().iter().find(|m| {
            let (w, h) = m.size();
            (u32::from(w), u32::from(h)) == (layout.width, layout.height)
        });
        let Some(mode) = exact.or_else(|| info.modes().iter().find(fits)).copied() else {
            let modes: Vec<String> = info
                .modes()
                .iter()
                .map(|m| format!("{}x{}", m.size().0, m.size().1))
                .collect();
            seen.push(format!("{name} (modes {})", modes.join(" ")));
            continue;
        };
        let crtc = current_crtc(card, &info).or_else(|| {
            info.encoders().iter().find_map(|&e| {
                let enc = card.get_encoder(e).ok()?;
                res.filter_crtcs(enc.possible_crtcs()).first().copied()
            })
        });
        let Some(crtc) = crtc else {
            seen.push(format!("{name} (no CRTC can drive it)"));
            continue;
        };
        return Ok(Target {
            connector: conn,
            connector_name: name,
            crtc,
            mode,
            plane: None,
        });
    }
    let listed = if seen.is_empty() {
        "none".into()
    } else {
        seen.join(", ")
    };
    // With nothing connected no framebuffer size helps: the display is the fix.
    let any_connected = seen.iter().any(|c| !c.ends_with("(not connected)"));
    Err(Error::NoDisplay {
        card: card.describe(),
        width: layout.width,
        height: layout.height,
        fix: if any_connected {
            format!(
                "connectors: {listed}; give the framebuffer the size of one of a connected \
                 connector's modes"
            )
        } else {
            format!(
                "connectors: {listed}; no connector is connected: connect a display (a \
                 connector forced off through /sys/class/drm/CARD-CONNECTOR/status comes \
                 back with `echo detect` into that file)"
            )
        },
    })
}

fn current_crtc(card: &Card, info: &connector::Info) -> Option<crtc::Handle> {
    card.get_encoder(info.current_encoder()?).ok()?.crtc()
}

/// The primary plane that can feed `crtc`.
fn primary_plane(card: &Card, crtc: crtc::Handle) -> Result<plane::Handle> {
    let res = card
        .resource_handles()
        .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETRESOURCES", &e))?;
    let planes = card
        .plane_handles()
        .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETPLANERESOURCES", &e))?;
    for p in planes {
        let info = card
            .get_plane(p)
            .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETPLANE", &e))?;
        if !res.filter_crtcs(info.possible_crtcs()).contains(&crtc) {
            continue;
        }
        let props = Props::of(card, p)?;
        if props.0.get("type").map(|v| v.1) == Some(DRM_PLANE_TYPE_PRIMARY) {
            return Ok(p);
        }
    }
    Err(Error::Ioctl {
        card: card.describe(),
        op: "DRM_IOCTL_MODE_GETPLANERESOURCES (no primary plane for the CRTC)",
        errno: Errno::NOENT,
    })
}

/// What `show` will change, read before it does.
fn save(card: &Card, t: &Target, setting: ModeSetting) -> Result<Saved> {
    let info = card
        .get_crtc(t.crtc)
        .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETCRTC", &e))?;
    match setting {
        ModeSetting::Legacy => {
            let res = card
                .resource_handles()
                .map_err(|e| card.ioctl_error("DRM_IOCTL_MODE_GETRESOURCES", &e))?;
            let connectors = res
                .connectors()
                .iter()
                .copied()
                .filter(|&c| {
                    card.get_connector(c, false)
                        .ok()
                        .and_then(|i| current_crtc(card, &i))
                        == Some(t.crtc)
                })
                .collect();
            Ok(Saved::Legacy { info, connectors })
        }
        ModeSetting::Atomic => {
            let plane = t.plane.expect("atomic targets have a plane");
            let pp = Props::of(card, plane)?;
            let cp = Props::of(card, t.crtc)?;
            let kp = Props::of(card, t.connector)?;
            let mut values = Vec::new();
            for name in [
                "FB_ID", "CRTC_ID", "SRC_X", "SRC_Y", "SRC_W", "SRC_H", "CRTC_X", "CRTC_Y",
                "CRTC_W", "CRTC_H",
            ] {
                let (id, v) = pp.get(card, name)?;
                values.push((plane.into(), id, v));
            }
            let (active, v) = cp.get(card, "ACTIVE")?;
            values.push((t.crtc.into(), active, v));
            let (crtc_id, v) = kp.get(card, "CRTC_ID")?;
            values.push((t.connector.into(), crtc_id, v));
            Ok(Saved::Atomic {
                values,
                mode: info.mode(),
                mode_id: cp.get(card, "MODE_ID")?.0,
            })
        }
    }
}
