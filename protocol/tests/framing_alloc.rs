//! What `FrameCodec::decode` allocates when a peer sends hostile bytes.
//!
//! A counting global allocator records, for the measuring thread only, the largest single
//! allocation request and the peak of live bytes while a decode runs. The workspace forbids
//! `unsafe_code` (and `forbid` cannot be lifted by an `allow` in this file), so the allocator is
//! `tracking_allocator::Allocator<System>`, whose `GlobalAlloc` impl calls our safe
//! `AllocationTracker` on every (de)allocation; the tracker keeps the figures in atomics.
//!
//! Measurements are serialised by a global mutex, and only (de)allocations attributed to our
//! allocation group (entered on the measuring thread, for the measured closure only) are counted,
//! so the test harness's other threads allocating concurrently do not disturb the figures.

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use bytes::BytesMut;
use peerfold_protocol::framing::{FrameCodec, FrameError, HEADER_LEN, MAX_FRAME_LEN, RESERVE_STEP};
use peerfold_protocol::wire;
use proptest::prelude::*;
use tracking_allocator::{
    AllocationGroupId, AllocationGroupToken, AllocationRegistry, AllocationTracker, Allocator,
};

#[global_allocator]
static GLOBAL: Allocator<System> = Allocator::system();

/// The allocation group whose events are counted (its raw id; 0 before the first measurement).
static MEASURED_GROUP: AtomicUsize = AtomicUsize::new(0);
/// The largest single allocation request seen since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated minus bytes freed by the measuring thread since the last reset.
static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The highest value `LIVE` reached since the last reset.
static PEAK: AtomicIsize = AtomicIsize::new(0);

/// Records into the atomics above. Called from inside the allocator, so it must not allocate.
struct Counter;

fn is_measured(group: &AllocationGroupId) -> bool {
    group.as_usize().get() == MEASURED_GROUP.load(Ordering::Relaxed)
}

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

impl AllocationTracker for Counter {
    fn allocated(
        &self,
        _addr: usize,
        object_size: usize,
        _wrapped_size: usize,
        group_id: AllocationGroupId,
    ) {
        if !is_measured(&group_id) {
            return;
        }
        LARGEST.fetch_max(object_size, Ordering::Relaxed);
        let live = LIVE.fetch_add(signed(object_size), Ordering::Relaxed) + signed(object_size);
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    fn deallocated(
        &self,
        _addr: usize,
        object_size: usize,
        _wrapped_size: usize,
        _source_group_id: AllocationGroupId,
        current_group_id: AllocationGroupId,
    ) {
        // Frees on the measuring thread lower the live count, whoever allocated the block.
        if is_measured(&current_group_id) {
            LIVE.fetch_sub(signed(object_size), Ordering::Relaxed);
        }
    }
}

/// The measuring group. The mutex also keeps two measurements from overlapping.
static MEASURER: LazyLock<Mutex<AllocationGroupToken>> = LazyLock::new(|| {
    AllocationRegistry::set_global_tracker(Counter).expect("only this test sets the tracker");
    Mutex::new(AllocationGroupToken::register().expect("allocation group ids not exhausted"))
});

/// Turns tracking off when dropped, even if the measured closure panics.
struct TrackingOn;

impl TrackingOn {
    fn enable() -> Self {
        AllocationRegistry::enable_tracking();
        Self
    }
}

impl Drop for TrackingOn {
    fn drop(&mut self) {
        AllocationRegistry::disable_tracking();
    }
}

/// What one measured closure allocated.
#[derive(Clone, Copy, Debug)]
struct Usage {
    /// The largest single allocation request, in bytes.
    largest: usize,
    /// The peak of bytes allocated and not yet freed, counted from the start of the closure.
    peak: usize,
}

/// Runs `f` on this thread, counting only the allocations it makes.
fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
    let mut token = MEASURER.lock().unwrap_or_else(PoisonError::into_inner);
    MEASURED_GROUP.store(token.id().as_usize().get(), Ordering::SeqCst);
    LARGEST.store(0, Ordering::SeqCst);
    LIVE.store(0, Ordering::SeqCst);
    PEAK.store(0, Ordering::SeqCst);
    let result = {
        let _tracking = TrackingOn::enable();
        let _group = token.enter();
        f()
    };
    let usage = Usage {
        largest: LARGEST.load(Ordering::SeqCst),
        peak: usize::try_from(PEAK.load(Ordering::SeqCst)).unwrap_or(0),
    };
    (result, usage)
}

/// How a decode loop over a buffer ended.
#[derive(Debug)]
struct Outcome {
    frames: usize,
    end: Result<(), FrameError>,
}

/// Decodes frames off `src` the way a connection does until the buffer is exhausted or refused,
/// then checks for a cut-off frame as at the end of a stream.
fn decode_loop(codec: &FrameCodec, src: &mut BytesMut) -> Outcome {
    let mut frames = 0;
    loop {
        match codec.decode(src) {
            Ok(Some(_)) => frames += 1,
            Ok(None) => {
                return Outcome {
                    frames,
                    end: codec.finish(src),
                };
            }
            Err(e) => {
                return Outcome {
                    frames,
                    end: Err(e),
                };
            }
        }
    }
}

/// The small limit used to make bounds tight.
const LIMIT: usize = 4096;
/// What decoding anything under `LIMIT` may allocate: the frame, its decoded form, slack.
const BOUND: usize = 4 * LIMIT + 64 * 1024;

fn header(len: usize) -> Vec<u8> {
    u32::try_from(len)
        .expect("test lengths fit the 4-byte prefix")
        .to_be_bytes()
        .to_vec()
}

fn varint(value: u64, out: &mut Vec<u8>) {
    prost::encoding::encode_varint(value, out);
}

/// Tag byte of a length-delimited field (`wire type 2`) with a number below 16.
fn delimited_tag(field: u8) -> u8 {
    (field << 3) | 2
}

/// A complete frame of `len` bytes whose body opens with length-delimited field `field` of
/// `Message` claiming `claimed` bytes; with `nested`, that field's declared length is honest and
/// a `Response.data` (field 2) inside it claims `claimed` bytes instead.
fn huge_field_frame(len: usize, field: u8, claimed: u64, nested: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if nested {
        let mut inner = vec![delimited_tag(2)];
        varint(claimed, &mut inner);
        body.push(delimited_tag(6));
        let honest = len.saturating_sub(1 + prost::encoding::encoded_len_varint(len as u64));
        varint(honest as u64, &mut body);
        body.extend_from_slice(&inner);
    } else {
        body.push(delimited_tag(field));
        varint(claimed, &mut body);
    }
    body.resize(len.max(body.len()), 0);
    let mut frame = header(body.len());
    frame.extend_from_slice(&body);
    frame
}

fn close_frame(reason: &str) -> Vec<u8> {
    let message = wire::Message {
        body: Some(wire::message::Body::Close(wire::Close {
            reason: reason.into(),
        })),
    };
    let mut out = BytesMut::new();
    FrameCodec::new(LIMIT).encode(&message, &mut out).unwrap();
    out.to_vec()
}

/// Hand-made hostile inputs for a codec limited to `LIMIT`.
fn crafted_inputs() -> Vec<Vec<u8>> {
    let mut inputs = vec![
        // Announces 4 GiB.
        [header(u32::MAX as usize), vec![0; 16]].concat(),
        // Announces the protocol's maximum but brings only a few bytes.
        [header(MAX_FRAME_LEN), vec![0x4a, 0x00, 0x42]].concat(),
        [header(MAX_FRAME_LEN + 1), vec![1, 2, 3]].concat(),
        // Just over and exactly at the custom limit, incomplete.
        [header(LIMIT + 1), vec![0; 8]].concat(),
        [header(LIMIT), vec![0; 8]].concat(),
        // A whole valid frame, then a lie.
        [close_frame("hello"), header(u32::MAX as usize)].concat(),
    ];
    for nested in [false, true] {
        for field in 1..=9 {
            for claimed in [u64::MAX, u64::from(u32::MAX), MAX_FRAME_LEN as u64, 1 << 40] {
                inputs.push(huge_field_frame(LIMIT - 1, field, claimed, nested));
            }
        }
    }
    // The same, cut short: the header is within the limit but the body is still arriving.
    let mut cut = huge_field_frame(LIMIT - 1, 6, u64::MAX, true);
    cut.truncate(64);
    inputs.push(cut);
    inputs
}

/// Decodes `input` under `LIMIT`, asserting no allocation past `BOUND`; returns the outcome.
fn check_bounded(input: &[u8]) -> Outcome {
    let codec = FrameCodec::new(LIMIT);
    let mut src = BytesMut::from(input);
    let (outcome, usage) = measure(|| decode_loop(&codec, &mut src));
    assert!(
        usage.largest <= BOUND && usage.peak <= BOUND,
        "decoding {} bytes ({outcome:?}) allocated {usage:?}, bound {BOUND}",
        input.len()
    );
    outcome
}

#[test]
fn measurement_sees_allocations_on_this_thread_only() {
    let (v, usage) = measure(|| black_box(Vec::<u8>::with_capacity(100_000)));
    drop(v);
    assert!(usage.largest >= 100_000, "{usage:?}");
    assert!(usage.peak >= 100_000, "{usage:?}");

    let ((), usage) = measure(|| {
        // Another thread allocating a lot at the same time must not count.
        std::thread::scope(|s| {
            s.spawn(|| drop(black_box(vec![0u8; 1 << 20])));
        });
    });
    assert!(usage.largest < 1 << 20, "{usage:?}");
}

#[test]
fn crafted_hostile_frames_stay_within_bound() {
    for input in crafted_inputs() {
        let outcome = check_bounded(&input);
        // Every crafted input is refused, at the latest when the stream ends.
        assert!(outcome.end.is_err(), "{outcome:?}");
        assert!(outcome.frames <= 1, "{outcome:?}");
    }
}

#[test]
fn default_codec_reserves_only_a_step_past_what_arrived() {
    let codec = FrameCodec::default();
    let mut src = BytesMut::from(
        // The body starts like a block response (field 6), the only kind allowed this large.
        [
            header(MAX_FRAME_LEN - 1),
            [vec![0x32], vec![0; 99]].concat(),
        ]
        .concat()
        .as_slice(),
    );
    let (result, usage) = measure(|| codec.decode(&mut src));
    assert!(matches!(result, Ok(None)), "{result:?}");
    // A frame announced at the maximum that stalls after 100 bytes pins a step, not 16 MiB.
    let bound = 2 * RESERVE_STEP + 4096;
    assert!(usage.largest <= bound, "{usage:?}, bound {bound}");
    assert!(usage.peak <= bound, "{usage:?}, bound {bound}");
    assert!(src.capacity() >= HEADER_LEN + 100 + RESERVE_STEP.min(MAX_FRAME_LEN));
    assert_eq!(src.len(), HEADER_LEN + 100);
    assert!(matches!(
        codec.finish(&src),
        Err(FrameError::Truncated { buffered: 104, needed }) if needed == HEADER_LEN + MAX_FRAME_LEN - 1
    ));
}

#[test]
fn default_codec_refuses_oversized_header_without_allocating() {
    let codec = FrameCodec::default();
    for len in [MAX_FRAME_LEN + 1, u32::MAX as usize] {
        let mut src = BytesMut::from([header(len), vec![0; 100]].concat().as_slice());
        let capacity = src.capacity();
        let (result, usage) = measure(|| codec.decode(&mut src));
        assert!(
            matches!(result, Err(FrameError::Oversized { len: l, max: MAX_FRAME_LEN }) if l == len),
            "{result:?}"
        );
        assert!(usage.largest <= 4096 && usage.peak <= 4096, "{usage:?}");
        assert_eq!(src.capacity(), capacity);
    }
}

/// A 4-byte prefix likely to be hostile, followed by a few bytes.
fn hostile_header() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        Just(u32::MAX as usize),
        Just(MAX_FRAME_LEN),
        Just(MAX_FRAME_LEN - 1),
        Just(MAX_FRAME_LEN + 1),
        Just(LIMIT + 1),
        Just(LIMIT),
        Just(LIMIT - 1),
        any::<u32>().prop_map(|n| n as usize),
    ];
    (len, proptest::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(len, tail)| [header(len), tail].concat())
}

/// A complete frame just under the limit with a length-delimited field claiming far too much.
fn huge_field() -> impl Strategy<Value = Vec<u8>> {
    (
        LIMIT - 64..LIMIT,
        1u8..=9,
        prop_oneof![Just(u64::MAX), 1u64 << 20.., LIMIT as u64..1 << 20],
        any::<bool>(),
    )
        .prop_map(|(len, field, claimed, nested)| huge_field_frame(len, field, claimed, nested))
}

fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    let single = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4096),
        hostile_header(),
        huge_field(),
    ];
    // Some valid frames first, so the hostile part arrives mid-stream.
    (proptest::collection::vec(".{0,40}", 0..3), single).prop_map(|(reasons, tail)| {
        let mut input: Vec<u8> = reasons.iter().flat_map(|r| close_frame(r)).collect();
        input.extend_from_slice(&tail);
        input
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_input_cannot_make_decoder_allocate_past_the_limit(input in hostile_input()) {
        check_bounded(&input);
    }
}

/// Protobuf would expand each 2-byte empty `FileInfo` of an `Index` into a 288-byte struct
/// (measured before the decode budget existed: a 4 KiB frame peaked at ~430 KiB, a frame of
/// `MAX_FRAME_LEN` at ~3.6 GB). The decoder's cost walk must refuse such frames first.
#[test]
fn repeated_empty_messages_stay_within_bound() {
    let mut files = Vec::new();
    while files.len() + 2 <= LIMIT - 8 {
        // `Index.files` (field 2), an empty `FileInfo`.
        files.extend_from_slice(&[delimited_tag(2), 0]);
    }
    let mut body = vec![delimited_tag(3)];
    varint(files.len() as u64, &mut body);
    body.extend_from_slice(&files);
    check_bounded(&[header(body.len()), body].concat());
}
