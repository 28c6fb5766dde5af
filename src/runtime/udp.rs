//! UDP sockets for the shard threads: `SO_REUSEPORT` sockets with large buffers (socket2),
//! received with `recvmmsg` and sent with `sendmmsg` in batches (nix's safe wrappers).
//!
//! Owns the socket and its batch buffers; knows nothing of SIP.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use bytes::Bytes;
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use socket2::{Domain, Protocol, Socket, Type};

use crate::transaction::Transmit;

/// Datagrams per `recvmmsg`/`sendmmsg` call.
pub(crate) const BATCH: usize = 32;
/// Room for one datagram: the UDP maximum (RFC 3261 §18.1.1 lets a peer send up to it).
const SLOT: usize = 65_535;

/// Opens a UDP socket on `addr` that other shards may bind too (`SO_REUSEPORT`), with
/// `buffer` bytes of kernel receive and send buffer asked for.
pub(crate) fn bind_shared(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    // The kernel may clamp these to net.core.rmem_max/wmem_max: best effort.
    let _ = socket.set_recv_buffer_size(buffer);
    let _ = socket.set_send_buffer_size(buffer);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Receives up to [`BATCH`] datagrams per call.
pub(crate) struct BatchReceiver {
    buffers: Vec<Box<[u8]>>,
    headers: MultiHeaders<SockaddrStorage>,
}

/// What one `recvmmsg` brought.
pub(crate) struct Received {
    /// Sender and payload (copied out of the batch buffer: a datagram may be kept for
    /// tens of seconds by a transaction, and must not pin the whole batch).
    pub datagrams: Vec<(SocketAddr, Bytes)>,
    /// Datagrams larger than a slot, empty, or from an address family we do not speak.
    pub truncated: u64,
}

impl BatchReceiver {
    pub(crate) fn new() -> Self {
        BatchReceiver {
            buffers: (0..BATCH)
                .map(|_| vec![0u8; SLOT].into_boxed_slice())
                .collect(),
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// One non-blocking `recvmmsg`; an empty batch when nothing is waiting.
    pub(crate) fn receive(
        &mut self,
        socket: &UdpSocket,
        out: &mut Received,
    ) -> std::io::Result<()> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .buffers
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = match recvmmsg(
            socket.as_raw_fd(),
            &mut self.headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        ) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for msg in results {
            let address = msg.address.and_then(|a| to_socket_addr(&a));
            let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
            match (address, msg.iovs().next()) {
                (Some(a), Some(data)) if !truncated => {
                    out.datagrams.push((a, Bytes::copy_from_slice(data)));
                }
                _ => out.truncated += 1,
            }
        }
        Ok(())
    }
}

/// Sends transmits in `sendmmsg` batches.
pub(crate) struct BatchSender {
    headers: MultiHeaders<SockaddrStorage>,
}

impl BatchSender {
    pub(crate) fn new() -> Self {
        BatchSender {
            headers: MultiHeaders::preallocate(BATCH, None),
        }
    }

    /// Sends them all (the socket is blocking for sends: a full send buffer waits briefly
    /// in the kernel rather than dropping). Returns how many could not be sent.
    pub(crate) fn send(&mut self, socket: &UdpSocket, transmits: &[Transmit]) -> u64 {
        let mut failed = 0;
        for chunk in transmits.chunks(BATCH) {
            let slices: Vec<[IoSlice<'_>; 1]> =
                chunk.iter().map(|t| [IoSlice::new(&t.payload)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|t| Some(SockaddrStorage::from(t.destination)))
                .collect();
            let mut sent = 0;
            while sent < chunk.len() {
                match sendmmsg(
                    socket.as_raw_fd(),
                    &mut self.headers,
                    slices[sent..].iter(),
                    &addrs[sent..],
                    [],
                    MsgFlags::empty(),
                ) {
                    Ok(results) => {
                        let n = results.count();
                        if n == 0 {
                            break;
                        }
                        sent += n;
                    }
                    Err(nix::errno::Errno::EINTR) => continue,
                    // One bad destination (unreachable, refused): skip it and go on.
                    Err(_) => {
                        failed += 1;
                        sent += 1;
                    }
                }
            }
            failed += (chunk.len() - sent.min(chunk.len())) as u64;
        }
        failed
    }
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from(*v4));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_go_out_and_come_back() {
        let a = bind_shared("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let transmits: Vec<Transmit> = (0..40)
            .map(|i| Transmit {
                destination: to,
                payload: Bytes::from(format!("datagram {i}")),
                transport: crate::transaction::Transport::Udp,
            })
            .collect();
        assert_eq!(BatchSender::new().send(&a, &transmits), 0);
        let mut buf = [0u8; 64];
        for i in 0..40 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(from, a.local_addr().unwrap());
            assert_eq!(&buf[..n], format!("datagram {i}").as_bytes());
        }
        // And back, received in batches.
        for i in 0..40 {
            b.send_to(format!("back {i}").as_bytes(), a.local_addr().unwrap())
                .unwrap();
        }
        let mut rx = BatchReceiver::new();
        let mut got = Received {
            datagrams: Vec::new(),
            truncated: 0,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.datagrams.len() < 40 && std::time::Instant::now() < deadline {
            rx.receive(&a, &mut got).unwrap();
        }
        assert_eq!(got.datagrams.len(), 40);
        assert!(got.datagrams.iter().all(|(from, _)| *from == to));
        assert_eq!(&got.datagrams[39].1[..], b"back 39");
    }
}
