//! One socket write per connection task poll, not one per response.
//!
//! `h2` writes every DATA frame longer than 256 bytes with a flush of its own, so a
//! connection that finishes twenty responses in one poll (a commit batch wakes twenty
//! creates at once) makes twenty TLS records and twenty `writev` calls. Between the
//! connection and its TLS stream sits [`BatchedWrites`]: what the connection writes
//! and flushes lands in a buffer, and the task's [`Flushed`] future writes the buffer
//! out once the connection's poll returns, before the task sleeps. Nothing waits
//! longer than it did: the buffer always goes out within the poll that filled it.
//!
//! Memory is bounded: past [`LIMIT`] buffered bytes a write first pushes the buffer to
//! the socket and waits (the socket's backpressure) if it cannot. Once the connection
//! has ended, or handed its stream to an upgrade (exec, port-forward), the stream
//! writes through: each write reaches the socket, as on the bare stream.

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How many bytes a connection may buffer before a write waits for the socket.
pub const LIMIT: usize = 256 << 10;

/// The connection's side: the stream it reads and writes.
pub struct BatchedWrites<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

/// The task's side: [`Flushed::new`] wraps the future that drives the connection.
pub struct Flusher<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

struct Shared<S> {
    io: S,
    pending: BytesMut,
    /// Bytes were written to `io` and not flushed since.
    unflushed: bool,
    /// Flushes are left to the task ([`Flushed`]) while it drives the connection.
    deferring: bool,
    /// A write to `io` failed: every later call reports it.
    failed: Option<io::ErrorKind>,
}

/// Splits `io` into the stream a connection uses and the flusher its task drains.
pub fn batched<S>(io: S) -> (BatchedWrites<S>, Flusher<S>) {
    let shared =
        Arc::new(Mutex::new(Shared { io, pending: BytesMut::new(), unflushed: false, deferring: true, failed: None }));
    (BatchedWrites { shared: Arc::clone(&shared) }, Flusher { shared })
}

impl<S> Shared<S> {
    /// The failure a write recorded, for reads as well as writes.
    fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }
}

impl<S: AsyncWrite + Unpin> Shared<S> {
    /// Writes the buffer to `io` and flushes it.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        let result = self.drain_inner(cx);
        if let Poll::Ready(Err(error)) = &result {
            self.failed = Some(error.kind());
        }
        result
    }

    fn drain_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(written);
            self.unflushed = true;
        }
        if self.unflushed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// A write once nothing defers any more (the connection ended or handed its stream
    /// to an upgrade): what is buffered goes first, then `write` reaches `io` itself, as
    /// it would on the bare stream, whose writers need not flush.
    fn write_through(
        &mut self,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        ready!(self.drain(cx))?;
        let result = write(Pin::new(&mut self.io), cx);
        match &result {
            Poll::Ready(Ok(_)) => self.unflushed = true,
            Poll::Ready(Err(error)) => self.failed = Some(error.kind()),
            Poll::Pending => {}
        }
        result
    }

    /// Room for more: past [`LIMIT`], the buffer goes to the socket first.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        if self.pending.len() >= LIMIT {
            ready!(self.drain(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        // A connection that only reads (an idle HTTP/1.1 one) learns of a failed write
        // here, and ends instead of waiting for a peer it can no longer answer.
        shared.check()?;
        Pin::new(&mut shared.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.lock();
        if !shared.deferring {
            return shared.write_through(cx, |io, cx| io.poll_write(cx, buf));
        }
        ready!(shared.poll_room(cx))?;
        shared.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = self.shared.lock();
        if !shared.deferring {
            return shared.write_through(cx, |io, cx| io.poll_write_vectored(cx, bufs));
        }
        ready!(shared.poll_room(cx))?;
        let mut written = 0;
        for buf in bufs {
            shared.pending.extend_from_slice(buf);
            written += buf.len();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        if shared.deferring {
            // The task's `Flushed` writes the buffer out when this poll of the
            // connection returns.
            return Poll::Ready(shared.check());
        }
        shared.drain(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = self.shared.lock();
        ready!(shared.drain(cx))?;
        Pin::new(&mut shared.io).poll_shutdown(cx)
    }
}

/// Drives a connection's future, writing out what each of its polls buffered.
pub struct Flushed<F: Future, S> {
    connection: Pin<Box<F>>,
    flusher: Flusher<S>,
    output: Option<F::Output>,
}

impl<F: Future, S> Flushed<F, S> {
    pub fn new(connection: F, flusher: Flusher<S>) -> Self {
        Flushed { connection: Box::pin(connection), flusher, output: None }
    }
}

impl<F: Future, S: AsyncWrite + Unpin> Future for Flushed<F, S>
where
    F::Output: Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.output.is_none() {
            if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
                this.output = Some(output);
                // Over, or its stream handed to an upgrade: writes go straight to the socket now.
                this.flusher.shared.lock().deferring = false;
            }
        }
        let drained = this.flusher.shared.lock().drain(cx);
        if let (Poll::Ready(Err(_)), None) = (&drained, &this.output) {
            // The connection learns of the failure from its next write or flush.
            cx.waker().wake_by_ref();
        }
        match (this.output.take(), drained) {
            (Some(output), Poll::Ready(_)) => Poll::Ready(output),
            (output, _) => {
                this.output = output;
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A socket that records each write call and can refuse writes (full) or fail them
    /// (broken).
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
        full: bool,
        broken: bool,
        flushes: usize,
    }

    impl AsyncRead for Socket {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            if self.broken {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if self.full {
                return Poll::Pending;
            }
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn socket_of(flusher: &Flusher<Socket>) -> parking_lot::MappedMutexGuard<'_, Socket> {
        parking_lot::MutexGuard::map(flusher.shared.lock(), |shared| &mut shared.io)
    }

    #[tokio::test]
    async fn the_writes_of_one_poll_reach_the_socket_as_one_write_before_it_returns() {
        let (mut stream, flusher) = batched(Socket::default());
        let peek = Flusher { shared: Arc::clone(&flusher.shared) };
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let connection = async move {
            for response in [&b"first"[..], b"second", b"third"] {
                stream.write_all(response).await.expect("write");
                stream.flush().await.expect("flush");
            }
            // The connection now waits for its peer: what it wrote must be out.
            let _ = wait.await;
        };
        let mut driven = Box::pin(Flushed::new(connection, flusher));
        assert!(poll_once(driven.as_mut()).is_pending());
        {
            let socket = socket_of(&peek);
            assert_eq!(socket.writes, vec![b"firstsecondthird".to_vec()]);
            assert_eq!(socket.flushes, 1);
        }
        release.send(()).expect("release");
        driven.await;
        assert_eq!(socket_of(&peek).flushes, 1, "nothing more to flush");
    }

    #[tokio::test]
    async fn a_full_buffer_waits_for_the_socket() {
        let (mut stream, flusher) = batched(Socket { full: true, ..Socket::default() });
        let chunk = vec![7u8; LIMIT];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // The first chunk fills the buffer; the next must wait for the full socket.
        assert!(matches!(Pin::new(&mut stream).poll_write(&mut cx, &chunk), Poll::Ready(Ok(n)) if n == LIMIT));
        assert!(Pin::new(&mut stream).poll_write(&mut cx, b"more").is_pending());
        assert_eq!(flusher.shared.lock().pending.len(), LIMIT);
        // Once the socket takes the buffer, writing goes on.
        socket_of(&flusher).full = false;
        assert!(matches!(Pin::new(&mut stream).poll_write(&mut cx, b"more"), Poll::Ready(Ok(4))));
        assert_eq!(socket_of(&flusher).writes.concat().len(), LIMIT);
    }

    #[tokio::test]
    async fn after_the_connection_ends_writes_go_straight_to_the_socket() {
        let (stream, flusher) = batched(Socket::default());
        let peek = Flusher { shared: Arc::clone(&flusher.shared) };
        // An upgrade: the connection's future ends and hands its stream on.
        let mut upgraded = Flushed::new(async move { stream }, flusher).await;
        // Whoever writes on the upgraded stream need not flush: the bare stream's
        // writes reach the socket, and so do these.
        upgraded.write_all(b"exec output").await.expect("write");
        assert_eq!(socket_of(&peek).writes, vec![b"exec output".to_vec()]);
        upgraded.flush().await.expect("flush");
        assert_eq!(socket_of(&peek).flushes, 1);
    }

    #[tokio::test]
    async fn a_failed_write_ends_the_connection_at_its_next_read() {
        let (mut stream, flusher) = batched(Socket { broken: true, ..Socket::default() });
        let connection = async move {
            stream.write_all(b"response").await.expect("buffered");
            stream.flush().await.expect("deferred");
            // Waits for the peer: the failed write must end this wait.
            let mut byte = [0u8; 1];
            tokio::io::AsyncReadExt::read(&mut stream, &mut byte).await
        };
        let read = Flushed::new(connection, flusher).await;
        assert_eq!(read.expect_err("the write failed").kind(), io::ErrorKind::BrokenPipe);
    }

    /// Polls `future` once with a waker that does nothing.
    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(std::task::Waker::noop()))
    }
}
