//! A TUN device: one file descriptor carrying the IP packets of one network interface.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use anyhow::Context as _;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

/// An open TUN interface, without packet information headers: each read is one IP packet.
/// The interface disappears when the last descriptor closes.
#[derive(Debug)]
pub(crate) struct Tun {
    file: File,
    /// The interface name.
    pub(crate) name: String,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

impl Tun {
    /// Creates interface `name` in the calling process's network namespace.
    pub(crate) fn create(name: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            name.len() < libc::IFNAMSIZ,
            "interface name {name:?} is too long"
        );
        let file = File::options()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .context("opening /dev/net/tun")?;
        let mut request = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TUN | IFF_NO_PI,
            _pad: [0; 22],
        };
        request.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `IfReq` lays out (name,
        // flags, padding to the union's size); the descriptor is open and owned by `file`.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) };
        if result < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("creating TUN interface {name}"));
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }

    /// Waits up to `timeout` for a packet and reads it into `buf`; `Ok(0)` when none came.
    pub(crate) fn read_timeout(&self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize> {
        let mut poll = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for an open descriptor.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        match ready {
            0 => Ok(0),
            n if n < 0 => Err(std::io::Error::last_os_error()),
            _ => (&self.file).read(buf),
        }
    }

    /// Delivers one IP packet to the interface (the kernel receives it).
    pub(crate) fn write(&self, packet: &[u8]) -> std::io::Result<()> {
        (&self.file).write(packet).map(|_| ())
    }
}
