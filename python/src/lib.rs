//! `shmif._shmif`: the native half of the `shmif` Python package.
//!
//! A thin layer over the `shmif` crate's public API: [`shmif::Interface`],
//! [`shmif::Error`] and [`shmif::dump::Dump`]. The Python package
//! (`python/shmif/`) re-exports these and adds the exception classes, the
//! dataclasses, asyncio and scapy. Library errors become the exceptions of
//! `shmif.errors` (raised from here through `shmif.errors._from_library`), with
//! the library's messages; nothing here panics on bad input.
#![forbid(unsafe_code)]

use pyo3::exceptions::{PyStopIteration, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a blocking receive waits with the GIL released before it takes
/// the GIL back to run signal handlers (so that Ctrl-C interrupts it).
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// Size of a bus file (NetBSD's `BUSMEM_SIZE`).
const BUS_SIZE: usize = 1 << 20;

/// Snapshot length in a pcap's global header: what `shmif_dumpbus` writes.
const PCAP_SNAPLEN: u32 = 1518;

/// A failure, before it becomes a Python exception: which class
/// (`shmif.errors._from_library` picks it from `kind` and `errno`), the
/// message, the OS error number and the file concerned.
struct Failure {
    kind: &'static str,
    message: String,
    errno: Option<i32>,
    path: Option<PathBuf>,
}

impl Failure {
    fn new(kind: &'static str, message: String) -> Self {
        Failure {
            kind,
            message,
            errno: None,
            path: None,
        }
    }

    fn io(path: &Path, what: &str, e: &std::io::Error) -> Self {
        Failure {
            kind: "io",
            message: format!("{}: {what}: {e}", path.display()),
            errno: e.raw_os_error(),
            path: Some(path.to_path_buf()),
        }
    }

    fn not_a_bus(path: &Path, reason: &str) -> Self {
        Failure {
            kind: "not_a_bus",
            message: format!("{}: not a shmif bus: {reason}", path.display()),
            errno: None,
            path: Some(path.to_path_buf()),
        }
    }

    fn closed() -> Self {
        Failure::new("closed", "the interface is closed".into())
    }

    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let make = || -> PyResult<PyErr> {
            let f = py.import("shmif.errors")?.getattr("_from_library")?;
            let path = self.path.as_ref().map(|p| p.to_string_lossy().into_owned());
            let exc = f.call1((self.kind, &self.message, self.errno, path))?;
            Ok(PyErr::from_value(exc))
        };
        // Without the Python package (the native module imported alone) the
        // message still arrives, as an OSError.
        make().unwrap_or_else(|_| pyo3::exceptions::PyOSError::new_err(self.message))
    }
}

/// The message of a library error with every cause it does not already
/// spell out (as the `shmif` command prints them).
fn message_of(e: &shmif::Error) -> String {
    let mut msg = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cause = c.source();
    }
    msg
}

impl From<shmif::Error> for Failure {
    fn from(e: shmif::Error) -> Self {
        let message = message_of(&e);
        let (kind, errno, path) = match &e {
            shmif::Error::Io { path, source, .. } => {
                ("io", source.raw_os_error(), Some(path.clone()))
            }
            shmif::Error::NotABus { path, .. } => ("not_a_bus", None, Some(path.clone())),
            shmif::Error::Corrupt { path, .. } => ("corrupt", None, Some(path.clone())),
            shmif::Error::BusGone { path, .. } => ("bus_gone", None, Some(path.clone())),
            shmif::Error::FrameSize { .. } => ("frame_size", None, None),
            shmif::Error::Busy(_) | shmif::Error::NoLink | shmif::Error::Down => {
                ("down", None, None)
            }
            #[allow(unreachable_patterns)] // the enum is to become #[non_exhaustive]
            _ => ("other", None, None),
        };
        Failure {
            kind,
            message,
            errno,
            path,
        }
    }
}

/// Converts a library result, with the GIL held.
fn lib<T>(py: Python<'_>, r: Result<T, shmif::Error>) -> PyResult<T> {
    r.map_err(|e| Failure::from(e).into_pyerr(py))
}

/// A frame argument as bytes: `bytes` and `bytearray` directly, any other
/// object with the buffer protocol (`memoryview`, `array`) through
/// `memoryview(obj).tobytes()`. Refuses `str` and `int` with a `TypeError`.
fn frame_bytes(obj: &Bound<'_, PyAny>) -> PyResult<PyBackedBytes> {
    if let Ok(b) = obj.extract::<PyBackedBytes>() {
        return Ok(b);
    }
    let py = obj.py();
    let mv = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((obj,))
        .map_err(|_| {
            let t = obj
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_else(|_| "?".into());
            PyTypeError::new_err(format!(
                "a frame must be bytes-like (bytes, bytearray, memoryview), not {t}"
            ))
        })?;
    Ok(mv.call_method0("tobytes")?.extract::<PyBackedBytes>()?)
}

/// A timeout in seconds: `None` waits for ever; negative or NaN is refused.
fn parse_timeout(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, not {t}"
        ))),
        Some(t) if t.is_infinite() => Ok(None),
        Some(t) => Ok(Some(
            Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX),
        )),
    }
}

/// A duration property's new value, in seconds: `what` names the property
/// in the error; `math.inf` stands for "for ever" (`Duration::MAX`).
fn parse_seconds(what: &str, seconds: f64) -> PyResult<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {seconds}"
        )));
    }
    Ok(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX))
}

fn parse_mac(obj: &Bound<'_, PyAny>) -> PyResult<shmif::MacAddr> {
    if let Ok(s) = obj.extract::<String>() {
        return s.parse::<shmif::MacAddr>().map_err(|_| {
            PyValueError::new_err(format!(
                "not a MAC address: {s:?} (expected six hex octets, like b2:a0:00:00:00:01)"
            ))
        });
    }
    if let Ok(b) = obj.extract::<PyBackedBytes>() {
        let octets: [u8; 6] = b[..].try_into().map_err(|_| {
            PyValueError::new_err(format!("a MAC address is 6 bytes, not {}", b.len()))
        })?;
        return Ok(shmif::MacAddr(octets));
    }
    Err(PyTypeError::new_err(
        "mac must be a str like 'b2:a0:00:00:00:01' or 6 bytes",
    ))
}

/// An Ethernet interface on a shmif bus (the native class; `shmif.Interface`
/// extends it).
#[pyclass(module = "shmif._shmif", name = "Interface", subclass, frozen)]
struct PyInterface {
    iface: shmif::Interface,
    path: PathBuf,
    closed: AtomicBool,
    /// The wake-up descriptor handed out by `fileno()`, kept until close.
    wake_fd: Mutex<Option<OwnedFd>>,
}

/// What a receive hands back: the frame alone, or with its metadata.
#[derive(Clone, Copy)]
enum Shape {
    Bytes,
    Frame,
}

impl PyInterface {
    /// The interface, if not closed.
    fn live(&self, py: Python<'_>) -> PyResult<&shmif::Interface> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Failure::closed().into_pyerr(py));
        }
        Ok(&self.iface)
    }

    /// A library error, or "closed" if that is why the call failed (a
    /// receive woken by `close()` in another thread sees `Error::Down`).
    fn fail(&self, py: Python<'_>, e: shmif::Error) -> PyErr {
        if self.closed.load(Ordering::Acquire) {
            Failure::closed().into_pyerr(py)
        } else {
            Failure::from(e).into_pyerr(py)
        }
    }

    fn try_recv_shape(&self, py: Python<'_>, shape: Shape) -> PyResult<Option<Py<PyAny>>> {
        let iface = self.live(py)?;
        // Only the bytes object is made while the interface's receive lock
        // is held (it cannot start a garbage collection, which could run
        // arbitrary finalizers); the tuple is made after.
        let (bytes, r) = match iface.try_recv_with(|data, r| (PyBytes::new(py, data), r)) {
            Ok(Some(got)) => got,
            Ok(None) => return Ok(None),
            Err(e) => return Err(self.fail(py, e)),
        };
        match shape {
            Shape::Bytes => Ok(Some(bytes.into_any().unbind())),
            Shape::Frame => {
                let t = (bytes, r.sec, r.usec, r.sender).into_pyobject(py)?;
                Ok(Some(t.into_any().unbind()))
            }
        }
    }

    /// Receives with the GIL released while waiting, in slices, checking
    /// for signals between them.
    fn recv_shape(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        shape: Shape,
    ) -> PyResult<Option<Py<PyAny>>> {
        let timeout = parse_timeout(timeout)?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let forever = timeout.is_none() || deadline.is_none();
        loop {
            if let Some(f) = self.try_recv_shape(py, shape)? {
                return Ok(Some(f));
            }
            let slice = if forever {
                WAIT_SLICE
            } else {
                let left = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                if left.is_zero() {
                    return Ok(None);
                }
                left.min(WAIT_SLICE)
            };
            let iface = self.live(py)?;
            let waited = py.detach(|| iface.wait_for_wakeup(Some(slice)));
            if let Err(e) = waited {
                return Err(self.fail(py, e));
            }
            py.check_signals()?;
        }
    }
}

#[pymethods]
impl PyInterface {
    /// Attaches to the bus at `path` (created if missing, unless
    /// `create=False`) as a new interface and brings it up.
    #[new]
    #[pyo3(signature = (path, mac=None, promiscuous=false, create=true, mode=0o600, follow_symlinks=false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        mac: Option<&Bound<'_, PyAny>>,
        promiscuous: bool,
        create: bool,
        mode: u32,
        follow_symlinks: bool,
    ) -> PyResult<Self> {
        if mode > 0o7777 {
            return Err(PyValueError::new_err(format!(
                "mode must be permission bits (0 to 0o7777), not {mode:#o}"
            )));
        }
        let base = match mac {
            Some(m) if !m.is_none() => shmif::Interface::with_mac(parse_mac(m)?),
            _ => shmif::Interface::new(),
        };
        let open = shmif::OpenOptions::new()
            .create(create)
            .mode(mode)
            .follow_symlinks(follow_symlinks);
        let iface = base.with_open_options(open);
        // Opening may wait for a bus lock: without the GIL.
        lib(
            py,
            py.detach(|| -> Result<(), shmif::Error> {
                iface.set_link(&path)?;
                iface.up()
            }),
        )?;
        iface.set_promiscuous(promiscuous);
        Ok(PyInterface {
            iface,
            path,
            closed: AtomicBool::new(false),
            wake_fd: Mutex::new(None),
        })
    }

    /// Sends one Ethernet frame (14 to 1514 bytes: destination, source,
    /// EtherType, payload; no FCS).
    fn send(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<()> {
        let frame = frame_bytes(frame)?;
        let iface = self.live(py)?;
        py.detach(|| iface.send(&frame))
            .map_err(|e| self.fail(py, e))
    }

    /// Sends several frames under one hold of the bus lock, with one
    /// wake-up. Every frame is checked before any is sent. Returns how many
    /// were sent.
    fn send_batch(&self, py: Python<'_>, frames: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut all = Vec::new();
        for f in frames.try_iter()? {
            all.push(frame_bytes(&f?)?);
        }
        if all.is_empty() {
            return Ok(0);
        }
        let iface = self.live(py)?;
        let n = all.len();
        py.detach(|| iface.send_batch(all.iter().map(|b| &b[..])))
            .map_err(|e| self.fail(py, e))?;
        Ok(n)
    }

    /// Receives the next frame for this interface, waiting up to `timeout`
    /// seconds (`None`: for ever) with the GIL released. Returns `None` on
    /// timeout. Signal handlers run while it waits, so Ctrl-C interrupts it.
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        self.recv_shape(py, timeout, Shape::Bytes)
    }

    /// Waits up to `timeout` seconds (`None`: for ever) for a frame, then
    /// returns it with every frame already waiting, up to `max_frames`, in
    /// one call: a list, empty on timeout. `timeout=0` never blocks.
    #[pyo3(signature = (max_frames=64, timeout=None))]
    fn recv_batch<'py>(
        &self,
        py: Python<'py>,
        max_frames: usize,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let list = PyList::empty(py);
        if max_frames == 0 {
            return Ok(list);
        }
        let Some(first) = self.recv_shape(py, timeout, Shape::Bytes)? else {
            return Ok(list);
        };
        list.append(first)?;
        while list.len() < max_frames {
            match self.try_recv_shape(py, Shape::Bytes)? {
                Some(f) => list.append(f)?,
                None => break,
            }
        }
        Ok(list)
    }

    /// The next frame if one is waiting, else `None`; never blocks.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.try_recv_shape(py, Shape::Bytes)
    }

    /// Like `recv`, as a tuple `(data, sec, usec, sender)`.
    #[pyo3(signature = (timeout=None))]
    fn _recv_frame(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        self.recv_shape(py, timeout, Shape::Frame)
    }

    /// Like `try_recv`, as a tuple `(data, sec, usec, sender)`.
    fn _try_recv_frame(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.try_recv_shape(py, Shape::Frame)
    }

    /// Waits up to `timeout` seconds (`None`: for ever, in slices that
    /// check for signals) for the bus to change. Returns whether it did.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = parse_timeout(timeout)?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let slice = match deadline {
                None => WAIT_SLICE,
                Some(d) => d.saturating_duration_since(Instant::now()).min(WAIT_SLICE),
            };
            let iface = self.live(py)?;
            let seen = py
                .detach(|| iface.wait_for_wakeup(Some(slice)))
                .map_err(|e| self.fail(py, e))?;
            if seen {
                return Ok(true);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// A descriptor that becomes readable when the bus changes, for
    /// `select`, `selectors` or asyncio's `add_reader`. After it fires, call
    /// `clear_wakeups()`, then `try_recv()` until it returns `None`. Owned
    /// by the interface: valid until `close()`; never read or close it.
    fn fileno(&self, py: Python<'_>) -> PyResult<i32> {
        let iface = self.live(py)?;
        let mut slot = self.wake_fd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fd) = slot.as_ref() {
            return Ok(fd.as_raw_fd());
        }
        match iface.wakeup_fd() {
            Ok(Some(fd)) => {
                let raw = fd.as_raw_fd();
                *slot = Some(fd);
                Ok(raw)
            }
            Ok(None) => Err(Failure::new(
                "other",
                "this system has no pollable change events for the bus file".into(),
            )
            .into_pyerr(py)),
            Err(e) => Err(self.fail(py, e)),
        }
    }

    /// Consumes pending wake-up events (see `fileno`). Raises
    /// `BusGoneError` if the bus file was removed or replaced meanwhile.
    fn clear_wakeups(&self, py: Python<'_>) -> PyResult<()> {
        let iface = self.live(py)?;
        iface.clear_wakeups().map_err(|e| self.fail(py, e))
    }

    /// Detaches from the bus: wakes a receive blocked in another thread
    /// (which then raises `InterfaceClosedError`), releases the mapping and
    /// the wake-up descriptor. Closing twice is harmless.
    fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.iface.down();
        let _ = self.iface.unset_link();
        self.wake_fd
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// This interface's MAC address, like `'b2:a0:12:34:56:78'`.
    #[getter]
    fn mac(&self) -> String {
        self.iface.mac().to_string()
    }

    /// The random 64-bit id in the header of every frame this interface
    /// sends (how it recognises and skips its own frames).
    #[getter]
    fn sender_id(&self) -> u64 {
        self.iface.sender_id()
    }

    /// The bus file's path, as given.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether frames addressed to any MAC are received (never this
    /// interface's own).
    #[getter]
    fn get_promiscuous(&self) -> bool {
        self.iface.is_promiscuous()
    }

    #[setter]
    fn set_promiscuous(&self, on: bool) {
        self.iface.set_promiscuous(on);
    }

    /// Longest deferral, in seconds, of the wake-up write that follows a
    /// send (settable; default 0: every send wakes the bus's sleeping
    /// readers at once, as NetBSD does). With a delay, a helper thread
    /// writes one wake-up per delay while frames were sent: sends get much
    /// cheaper (the write is a system call), and a sleeping reader, such as
    /// a NetBSD peer, sees frames up to that much later. Readers that poll
    /// the ring see them at once.
    #[getter]
    fn get_wake_delay(&self) -> f64 {
        self.iface.wake_delay().as_secs_f64()
    }

    #[setter]
    fn set_wake_delay(&self, seconds: f64) -> PyResult<()> {
        let d = parse_seconds("wake_delay", seconds)?;
        self.iface.set_wake_delay(d);
        Ok(())
    }

    /// How long, in seconds, a blocking receive polls the ring before it
    /// sleeps on the wake-up (settable; default 0: sleep at once). Polling
    /// costs CPU and saves the sleep and wake-up when traffic is continuous;
    /// `math.inf` busy-polls.
    #[getter]
    fn get_spin(&self) -> f64 {
        let s = self.iface.spin();
        if s == Duration::MAX {
            f64::INFINITY
        } else {
            s.as_secs_f64()
        }
    }

    #[setter]
    fn set_spin(&self, seconds: f64) -> PyResult<()> {
        let d = parse_seconds("spin", seconds)?;
        self.iface.set_spin(d);
        Ok(())
    }

    /// On an extended bus, how long, in seconds, a registered reader naps
    /// after a burst (16 frames or more since its last wait) before it
    /// sleeps on the bus's futex, so that a streaming writer makes no
    /// wake-up call per batch (settable; default 0.0001; 0 turns it off).
    /// Never after a single frame, never for a lossy or NetBSD-bus reader.
    #[getter]
    fn get_rx_coalesce(&self) -> f64 {
        self.iface.rx_coalesce().as_secs_f64()
    }

    #[setter]
    fn set_rx_coalesce(&self, seconds: f64) -> PyResult<()> {
        let d = parse_seconds("rx_coalesce", seconds)?;
        self.iface.set_rx_coalesce(d);
        Ok(())
    }

    /// The counters as a dict of ints (`shmif.Interface.counters` makes it
    /// a `shmif.Counters`).
    fn _counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.iface.counters();
        let d = PyDict::new(py);
        d.set_item("tx_frames", c.tx_frames)?;
        d.set_item("tx_bytes", c.tx_bytes)?;
        d.set_item("rx_frames", c.rx_frames)?;
        d.set_item("rx_bytes", c.rx_bytes)?;
        d.set_item("rx_filtered", c.rx_filtered)?;
        d.set_item("rx_own", c.rx_own)?;
        d.set_item("overruns", c.overruns)?;
        d.set_item("overrun_bytes", c.overrun_bytes)?;
        d.set_item("overruns_unmeasured", c.overruns_unmeasured)?;
        d.set_item("malformed", c.malformed)?;
        d.set_item("lock_takeovers", c.lock_takeovers)?;
        d.set_item("ring_resets", c.ring_resets)?;
        d.set_item("ring_repairs", c.ring_repairs)?;
        d.set_item("rx_naps", c.rx_naps)?;
        Ok(d)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// The next frame, waiting for ever; the iteration ends when the
    /// interface is closed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PyStopIteration::new_err(()));
        }
        match self.recv_shape(py, None, Shape::Bytes) {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(PyStopIteration::new_err(())),
            Err(_) if self.closed.load(Ordering::Acquire) => Err(PyStopIteration::new_err(())),
            Err(e) => Err(e),
        }
    }
}

/// Reads a whole bus file for inspection: never mapped, locked or changed.
fn read_image(path: &Path) -> Result<Vec<u8>, Failure> {
    let meta = std::fs::metadata(path).map_err(|e| {
        let what = if e.kind() == std::io::ErrorKind::NotFound {
            "no such bus file"
        } else {
            "cannot inspect bus file"
        };
        Failure::io(path, what, &e)
    })?;
    if meta.is_dir() {
        return Err(Failure::not_a_bus(
            path,
            "it is a directory, not a regular file",
        ));
    }
    if !meta.is_file() {
        return Err(Failure::not_a_bus(path, "it is not a regular file"));
    }
    if meta.len() == 0 {
        return Err(Failure::not_a_bus(path, "the file is empty"));
    }
    let file = File::open(path).map_err(|e| Failure::io(path, "cannot open bus file", &e))?;
    let mut image = Vec::with_capacity(BUS_SIZE);
    file.take(BUS_SIZE as u64 + 1)
        .read_to_end(&mut image)
        .map_err(|e| Failure::io(path, "cannot read bus file", &e))?;
    Ok(image)
}

/// Checks an image as a bus, with a message naming the file.
fn parse_image<'a>(path: &Path, image: &'a [u8]) -> Result<shmif::dump::Dump<'a>, Failure> {
    shmif::dump::Dump::parse(image).map_err(|e| {
        let head = &image[..image.len().min(64)];
        let text = head
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or(image.len() as u64);
        let mut f = if text {
            Failure::not_a_bus(path, &format!("it is a {size}-byte text file"))
        } else if image.len() > BUS_SIZE {
            Failure::not_a_bus(
                path,
                &format!("it is {size} bytes long, a bus is {BUS_SIZE}"),
            )
        } else {
            Failure::new("not_a_bus", format!("{}: {e}", path.display()))
        };
        f.path = Some(path.to_path_buf());
        f
    })
}

/// One frame of a dump, as `(index, offset, sec, usec, data)`.
type DumpRow = (usize, u32, u32, u32, Vec<u8>);

/// What `_dump` found: the header fields, the header line, the frames, and
/// the corruption that ended the walk early, if any.
type DumpResult = (
    (u32, u64, u32, u32, u32),
    String,
    Vec<DumpRow>,
    Option<String>,
);

fn walk(path: &Path) -> Result<DumpResult, Failure> {
    let image = read_image(path)?;
    let dump = parse_image(path, &image)?;
    let h = dump.header();
    let header = (h.version, h.generation, h.first, h.last, h.lock);
    let mut frames = Vec::new();
    let mut corrupt = None;
    for f in dump.frames() {
        match f {
            Ok(f) => frames.push((f.index, f.offset, f.sec, f.usec, f.data)),
            Err(e) => {
                corrupt = Some(format!("{}: bus is corrupt: {e}", path.display()));
                break;
            }
        }
    }
    Ok((header, dump.header_line(), frames, corrupt))
}

/// Reads the bus at `path` (without locking or changing it) and returns
/// `((version, generation, first, last, lock), header_line, frames,
/// corruption)`, each frame `(index, offset, sec, usec, data)`; corruption
/// is the message for a frame chain that broke off, else `None`.
#[pyfunction]
fn _dump<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyTuple>> {
    let (header, line, frames, corrupt) =
        py.detach(|| walk(&path)).map_err(|f| f.into_pyerr(py))?;
    let rows = PyList::empty(py);
    for (index, offset, sec, usec, data) in frames {
        rows.append((index, offset, sec, usec, PyBytes::new(py, &data)))?;
    }
    (header, line, rows, corrupt).into_pyobject(py)
}

fn pcap_u32(w: &mut impl Write, v: u32) -> std::io::Result<()> {
    w.write_all(&v.to_ne_bytes())
}

/// Writes the frames as a classic pcap, as `shmif_dumpbus -p` does: the
/// global header in this host's byte order (magic a1b2c3d4, version 2.4,
/// snaplen 1518, Ethernet), each record with the bus timestamp as it is.
fn write_pcap_file(out: &Path, frames: &[DumpRow]) -> std::io::Result<()> {
    let mut w = BufWriter::new(File::create(out)?);
    pcap_u32(&mut w, 0xa1b2_c3d4)?;
    w.write_all(&2u16.to_ne_bytes())?;
    w.write_all(&4u16.to_ne_bytes())?;
    pcap_u32(&mut w, 0)?; // thiszone
    pcap_u32(&mut w, 0)?; // sigfigs
    pcap_u32(&mut w, PCAP_SNAPLEN)?;
    pcap_u32(&mut w, 1)?; // LINKTYPE_ETHERNET
    for (_, _, sec, usec, data) in frames {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        pcap_u32(&mut w, *sec)?;
        pcap_u32(&mut w, *usec)?;
        pcap_u32(&mut w, len)?;
        pcap_u32(&mut w, len)?;
        w.write_all(data)?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Writes the frames on the bus at `path` to `pcap_path` as a classic pcap
/// (what `shmif dump -p` writes) and returns how many. The bus is checked
/// before the pcap is created; a frame chain that breaks off is raised as
/// `CorruptBusError` after the frames before it were written.
#[pyfunction]
fn _write_pcap(py: Python<'_>, path: PathBuf, pcap_path: PathBuf) -> PyResult<usize> {
    let r = py.detach(|| -> Result<(usize, Option<String>), Failure> {
        let (_, _, frames, corrupt) = walk(&path)?;
        if same_file(&pcap_path, &path) {
            return Err(Failure {
                path: Some(pcap_path.clone()),
                ..Failure::new(
                    "other",
                    format!(
                        "{}: refusing to write the pcap over the bus file itself",
                        pcap_path.display()
                    ),
                )
            });
        }
        write_pcap_file(&pcap_path, &frames)
            .map_err(|e| Failure::io(&pcap_path, "cannot write pcap", &e))?;
        Ok((frames.len(), corrupt))
    });
    match r {
        Ok((n, None)) => Ok(n),
        Ok((_, Some(msg))) => Err(Failure {
            path: Some(path),
            ..Failure::new("corrupt", msg)
        }
        .into_pyerr(py)),
        Err(f) => Err(f.into_pyerr(py)),
    }
}

/// The native module of the `shmif` package.
#[pymodule]
fn _shmif(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyInterface>()?;
    m.add_function(wrap_pyfunction!(_dump, m)?)?;
    m.add_function(wrap_pyfunction!(_write_pcap, m)?)?;
    m.add("BUS_SIZE", BUS_SIZE)?;
    m.add("MIN_FRAME_LEN", 14)?;
    m.add("MAX_FRAME_LEN", 1514)?;
    Ok(())
}
