//! Hostile core modules against the warm call path: a pool slot reset with `PAGEMAP_SCAN` (or
//! `madvise`) must show the next instance nothing of the previous one (memory, grown memory,
//! sparse writes past the kept-resident 64 KiB, tables, globals, a second memory, another
//! module in the same slot, concurrent instances), and the epoch ticker, which only ticks
//! while a guest runs, must still interrupt an endless loop at its deadline.

use crate::engine::{Allocator, DEFAULT_SLOT_RESET, SlotReset, build};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Instance, Module, Store};

// --- a tiny wasm encoder (no `wat` crate in the lock file) ---------------------------------

fn uleb(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn sleb(mut v: i64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && b & 0x40 == 0) || (v == -1 && b & 0x40 != 0);
        out.push(if done { b } else { b | 0x80 });
        if done {
            return out;
        }
    }
}

fn i32c(v: i32) -> Vec<u8> {
    [vec![0x41], sleb(v as i64)].concat()
}
fn i64c(v: i64) -> Vec<u8> {
    [vec![0x42], sleb(v)].concat()
}
fn lget(i: u32) -> Vec<u8> {
    [vec![0x20], uleb(i as u64)].concat()
}
fn lset(i: u32) -> Vec<u8> {
    [vec![0x21], uleb(i as u64)].concat()
}
/// `load`/`store` opcode with align and memory index.
fn mem_op(op: u8, align: u8, mem: u32) -> Vec<u8> {
    if mem == 0 {
        vec![op, align, 0x00]
    } else {
        [vec![op, align | 0x40], uleb(mem as u64), vec![0x00]].concat()
    }
}
fn mem_size(mem: u32) -> Vec<u8> {
    [vec![0x3f], uleb(mem as u64)].concat()
}
fn mem_grow(mem: u32) -> Vec<u8> {
    [vec![0x40], uleb(mem as u64)].concat()
}
fn mem_fill(mem: u32) -> Vec<u8> {
    [vec![0xfc, 0x0b], uleb(mem as u64)].concat()
}

fn section(id: u8, body: Vec<u8>) -> Vec<u8> {
    [vec![id], uleb(body.len() as u64), body].concat()
}
fn vec_of(items: Vec<Vec<u8>>) -> Vec<u8> {
    [uleb(items.len() as u64), items.concat()].concat()
}
fn name(s: &str) -> Vec<u8> {
    [uleb(s.len() as u64), s.as_bytes().to_vec()].concat()
}
/// A function body: `locals` as (count, valtype) and the instructions (without `end`).
fn body(locals: &[(u32, u8)], code: Vec<u8>) -> Vec<u8> {
    let l = vec_of(
        locals
            .iter()
            .map(|(n, t)| [uleb(*n as u64), vec![*t]].concat())
            .collect(),
    );
    let b = [l, code, vec![0x0b]].concat();
    [uleb(b.len() as u64), b].concat()
}

const I32: u8 = 0x7f;
const I64: u8 = 0x7e;
/// Pages every memory is grown to (4 MiB: far past the 64 KiB kept resident).
const PAGES: i32 = 64;
const TABLE_MIN: i32 = 5000;
const TABLE_MAX: i32 = 10000;

/// Grows memory `m` to `PAGES` pages.
fn grow_mem(m: u32) -> Vec<u8> {
    [
        i32c(PAGES),
        mem_size(m),
        vec![0x6b], // i32.sub
        mem_grow(m),
        vec![0x1a], // drop
    ]
    .concat()
}

/// The hostile module: `memories` memories (the first with data segments at 200 and past the
/// kept-resident 64 KiB at 70000), a funcref table of `TABLE_MIN`, a mutable i64 global.
/// Exports:
/// - `digest() -> i64`: mixes the global, every memory's and the table's initial size, then
///   grows every memory to `PAGES` and the table to `TABLE_MAX` and mixes every word of every
///   memory and every non-null table slot: equal to a pristine instance's iff nothing is left.
/// - `dirty_all()`: changes the global, grows everything, fills every byte and table slot.
/// - `dirty_sparse(stride)`: changes the global, grows everything, writes a word every
///   `stride` bytes of every memory and sets every `stride/8`-th table slot.
fn hostile(memories: u32) -> Vec<u8> {
    let types = section(
        1,
        vec_of(vec![
            vec![0x60, 0x00, 0x01, I64],
            vec![0x60, 0x00, 0x00],
            vec![0x60, 0x01, I32, 0x00],
        ]),
    );
    let funcs = section(3, vec_of(vec![vec![0], vec![1], vec![2]]));
    let table = section(
        4,
        vec_of(vec![
            [
                vec![0x70, 0x01],
                uleb(TABLE_MIN as u64),
                uleb(TABLE_MAX as u64),
            ]
            .concat(),
        ]),
    );
    let mems = section(
        5,
        vec_of(
            (0..memories)
                .map(|_| [vec![0x01], uleb(2), uleb(PAGES as u64)].concat())
                .collect(),
        ),
    );
    let globals = section(
        6,
        vec_of(vec![[vec![I64, 0x01], i64c(7), vec![0x0b]].concat()]),
    );
    let exports = section(
        7,
        vec_of(vec![
            [name("digest"), vec![0x00, 0x00]].concat(),
            [name("dirty_all"), vec![0x00, 0x01]].concat(),
            [name("dirty_sparse"), vec![0x00, 0x02]].concat(),
        ]),
    );

    // digest: locals i (0), end (1): i32; acc (2): i64
    let mut d = [vec![0x23, 0x00], lset(2)].concat(); // acc = global
    for m in 0..memories {
        // acc = acc * 131 + memory.size(m)
        d.extend(
            [
                lget(2),
                i64c(131),
                vec![0x7e],
                mem_size(m),
                vec![0xad, 0x7c],
                lset(2),
            ]
            .concat(),
        );
    }
    // acc = acc * 131 + table.size
    d.extend(
        [
            lget(2),
            i64c(131),
            vec![0x7e],
            vec![0xfc, 0x10, 0x00, 0xad, 0x7c],
            lset(2),
        ]
        .concat(),
    );
    for m in 0..memories {
        d.extend(grow_mem(m));
    }
    // table.grow(ref.null, TABLE_MAX - table.size)
    d.extend(
        [
            vec![0xd0, 0x70],
            i32c(TABLE_MAX),
            vec![0xfc, 0x10, 0x00, 0x6b],
            vec![0xfc, 0x0f, 0x00, 0x1a],
        ]
        .concat(),
    );
    for m in 0..memories {
        d.extend(
            [
                i32c(0),
                lset(0),
                mem_size(m),
                i32c(16),
                vec![0x74], // i32.shl
                lset(1),
                vec![0x02, 0x40, 0x03, 0x40], // block loop
                lget(0),
                lget(1),
                vec![0x4f, 0x0d, 0x01], // i32.ge_u br_if 1
                lget(2),
                i64c(31),
                vec![0x7e], // i64.mul
                lget(0),
                mem_op(0x29, 3, m), // i64.load
                vec![0x7c],         // i64.add
                lset(2),
                lget(0),
                i32c(8),
                vec![0x6a],
                lset(0),
                vec![0x0c, 0x00, 0x0b, 0x0b], // br 0 end end
            ]
            .concat(),
        );
    }
    // non-null table slots: acc = acc * 3 + !is_null(table[i])
    d.extend(
        [
            i32c(0),
            lset(0),
            vec![0x02, 0x40, 0x03, 0x40],
            lget(0),
            vec![0xfc, 0x10, 0x00], // table.size
            vec![0x4f, 0x0d, 0x01],
            lget(2),
            i64c(3),
            vec![0x7e],
            lget(0),
            vec![0x25, 0x00, 0xd1, 0x45, 0xad, 0x7c], // table.get is_null eqz extend add
            lset(2),
            lget(0),
            i32c(1),
            vec![0x6a],
            lset(0),
            vec![0x0c, 0x00, 0x0b, 0x0b],
            lget(2),
        ]
        .concat(),
    );
    let digest = body(&[(2, I32), (1, I64)], d);

    let grow_all = |f: u32| {
        let mut c = [i64c(0x5555), vec![0x24, 0x00]].concat(); // global.set
        for m in 0..memories {
            c.extend(grow_mem(m));
        }
        // table.grow(ref.func f, TABLE_MAX - table.size)
        c.extend(
            [
                vec![0xd2, f as u8],
                i32c(TABLE_MAX),
                vec![0xfc, 0x10, 0x00, 0x6b],
                vec![0xfc, 0x0f, 0x00, 0x1a],
            ]
            .concat(),
        );
        c
    };
    let mut a = grow_all(1);
    for m in 0..memories {
        a.extend(
            [
                i32c(0),
                i32c(0xa5),
                mem_size(m),
                i32c(16),
                vec![0x74],
                mem_fill(m),
            ]
            .concat(),
        );
    }
    a.extend(
        [
            i32c(0),
            vec![0xd2, 0x01],
            vec![0xfc, 0x10, 0x00],
            vec![0xfc, 0x11, 0x00],
        ]
        .concat(),
    ); // table.fill
    let dirty_all = body(&[], a);

    // dirty_sparse: param stride (0); locals i (1), end (2)
    let mut s = grow_all(2);
    for m in 0..memories {
        s.extend(
            [
                i32c(0),
                lset(1),
                mem_size(m),
                i32c(16),
                vec![0x74],
                i32c(8),
                vec![0x6b],
                lset(2),
                vec![0x02, 0x40, 0x03, 0x40],
                lget(1),
                lget(2),
                vec![0x4b, 0x0d, 0x01], // i32.gt_u br_if 1
                lget(1),
                i64c(0x1122_3344_5566_7788),
                mem_op(0x37, 3, m), // i64.store
                lget(1),
                lget(0),
                vec![0x6a],
                lset(1),
                vec![0x0c, 0x00, 0x0b, 0x0b],
            ]
            .concat(),
        );
    }
    // table[i] = ref.func 2 for i in (0..table.size).step_by(stride / 8 + 1)
    s.extend(
        [
            i32c(0),
            lset(1),
            vec![0x02, 0x40, 0x03, 0x40],
            lget(1),
            vec![0xfc, 0x10, 0x00],
            vec![0x4f, 0x0d, 0x01],
            lget(1),
            vec![0xd2, 0x02, 0x26, 0x00], // table.set
            lget(1),
            lget(0),
            i32c(3),
            vec![0x76], // i32.shr_u
            vec![0x6a],
            i32c(1),
            vec![0x6a],
            lset(1),
            vec![0x0c, 0x00, 0x0b, 0x0b],
        ]
        .concat(),
    );
    let dirty_sparse = body(&[(2, I32)], s);
    let code = section(10, vec_of(vec![digest, dirty_all, dirty_sparse]));

    // data: memory 0 at 200 and at 70000 (past the kept-resident 64 KiB)
    let seg = |at: i32, bytes: &[u8]| {
        [
            vec![0x00],
            i32c(at),
            vec![0x0b],
            uleb(bytes.len() as u64),
            bytes.to_vec(),
        ]
        .concat()
    };
    let data = section(
        11,
        vec_of(vec![
            seg(200, b"initial image"),
            seg(70000, b"past keep-resident"),
        ]),
    );
    [
        b"\0asm\x01\0\0\0".to_vec(),
        types,
        funcs,
        table,
        mems,
        globals,
        exports,
        code,
        data,
    ]
    .concat()
}

/// What the next instance sees, then what it leaves behind.
enum Dirt {
    Nothing,
    All,
    Sparse(i32),
}

fn instance_digest(engine: &Engine, module: &Module, dirt: Dirt) -> i64 {
    let mut store = Store::new(engine, ());
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = Instance::new(&mut store, module, &[]).unwrap();
    let digest = instance
        .get_typed_func::<(), i64>(&mut store, "digest")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    match dirt {
        Dirt::Nothing => {}
        Dirt::All => instance
            .get_typed_func::<(), ()>(&mut store, "dirty_all")
            .unwrap()
            .call(&mut store, ())
            .unwrap(),
        Dirt::Sparse(stride) => instance
            .get_typed_func::<i32, ()>(&mut store, "dirty_sparse")
            .unwrap()
            .call(&mut store, stride)
            .unwrap(),
    }
    digest
}

/// The digest of a pristine instance, from an engine without a pool.
fn pristine(bytes: &[u8]) -> i64 {
    let mut c = wasmtime::Config::new();
    c.epoch_interruption(true);
    let engine = Engine::new(&c).unwrap();
    let module = Module::new(&engine, bytes).unwrap();
    instance_digest(&engine, &module, Dirt::Nothing)
}

/// Strides of sparse writes: every word, every page, every other page (many scan regions),
/// odd strides crossing page edges, one word per 64 KiB (just past the kept-resident size).
const STRIDES: [i32; 7] = [8, 4096, 8192, 12296, 65536, 65536 + 8, 1 << 20];

#[test]
fn attack_a_reused_slot_shows_nothing_of_grown_or_sparse_writes() {
    let bytes = hostile(1);
    let want = pristine(&bytes);
    // Dirtied then digested, it differs: the digest does see leftovers.
    let dirty = {
        let mut c = wasmtime::Config::new();
        c.epoch_interruption(true);
        let engine = Engine::new(&c).unwrap();
        let module = Module::new(&engine, &bytes).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX / 2);
        let i = Instance::new(&mut store, &module, &[]).unwrap();
        i.get_typed_func::<i32, ()>(&mut store, "dirty_sparse")
            .unwrap()
            .call(&mut store, 1 << 20)
            .unwrap();
        i.get_typed_func::<(), i64>(&mut store, "digest")
            .unwrap()
            .call(&mut store, ())
            .unwrap()
    };
    assert_ne!(
        dirty, want,
        "the digest must notice a word written at 1 MiB"
    );
    for reset in [SlotReset::PagemapScan, SlotReset::Madvise] {
        let (engine, allocator) = build(1, reset, None).unwrap();
        assert_eq!(allocator, Allocator::Pooling);
        let module = Module::new(&engine, &bytes).unwrap();
        for round in 0..3 {
            assert_eq!(
                instance_digest(&engine, &module, Dirt::All),
                want,
                "{reset:?} all {round}"
            );
            for stride in STRIDES {
                assert_eq!(
                    instance_digest(&engine, &module, Dirt::Sparse(stride)),
                    want,
                    "{reset:?} after stride {stride}, round {round}"
                );
            }
        }
        assert_eq!(
            instance_digest(&engine, &module, Dirt::Nothing),
            want,
            "{reset:?} last"
        );
    }
}

/// Another module taking over the slot sees its own image, not the previous module's bytes.
#[test]
fn attack_another_module_in_the_same_slot_sees_its_own_image() {
    let (a, b) = (hostile(1), {
        let mut b = hostile(1);
        // Same layout, another data image: change the last byte of the last segment.
        *b.last_mut().unwrap() ^= 0x20;
        b
    });
    let (want_a, want_b) = (pristine(&a), pristine(&b));
    assert_ne!(want_a, want_b);
    for reset in [SlotReset::PagemapScan, SlotReset::Madvise] {
        let (engine, _) = build(1, reset, None).unwrap();
        let (ma, mb) = (
            Module::new(&engine, &a).unwrap(),
            Module::new(&engine, &b).unwrap(),
        );
        for round in 0..4 {
            let dirt = || {
                if round % 2 == 0 {
                    Dirt::All
                } else {
                    Dirt::Sparse(8192)
                }
            };
            assert_eq!(
                instance_digest(&engine, &ma, dirt()),
                want_a,
                "{reset:?} a {round}"
            );
            assert_eq!(
                instance_digest(&engine, &mb, dirt()),
                want_b,
                "{reset:?} b {round}"
            );
        }
    }
}

/// A second memory is either refused or as clean as the first.
#[test]
fn attack_a_second_memory_is_refused_or_reset() {
    let bytes = hostile(2);
    let want = pristine(&bytes);
    for reset in [SlotReset::PagemapScan, SlotReset::Madvise] {
        let (engine, _) = build(2, reset, None).unwrap();
        let module = match Module::new(&engine, &bytes) {
            Ok(m) => m,
            Err(e) => {
                // The pool allows one memory per module (wasmtime's default): refused at
                // compile time, nothing to leak.
                let text = format!("{e:#}");
                assert!(text.contains("memories count of 2"), "{reset:?}: {text}");
                continue;
            }
        };
        let mut store = Store::new(&engine, ());
        if Instance::new(&mut store, &module, &[]).is_err() {
            continue; // refused by the pool's per-module limits: nothing to leak
        }
        drop(store);
        for round in 0..3 {
            assert_eq!(
                instance_digest(&engine, &module, Dirt::All),
                want,
                "{reset:?} {round}"
            );
            assert_eq!(
                instance_digest(&engine, &module, Dirt::Sparse(12296)),
                want,
                "{reset:?} sparse {round}"
            );
        }
    }
}

/// Concurrent instances in a pool of two: each sees a pristine image while the other dirties
/// its slot.
#[test]
fn attack_concurrent_instances_see_nothing_of_each_other() {
    let bytes = hostile(1);
    let want = pristine(&bytes);
    let (engine, _) = build(2, SlotReset::PagemapScan, None).unwrap();
    let module = Module::new(&engine, &bytes).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (engine, module) = (engine.clone(), module.clone());
            std::thread::spawn(move || {
                for round in 0..40 {
                    let dirt = match (round + t) % 3 {
                        0 => Dirt::All,
                        1 => Dirt::Sparse(8192),
                        _ => Dirt::Sparse(65536 + 8),
                    };
                    assert_eq!(
                        instance_digest(&engine, &module, dirt),
                        want,
                        "thread {t} round {round}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// --- timeouts -----------------------------------------------------------------------------

/// `spin()`: an endless loop. `spin_calling()`: an endless loop calling the imported host
/// function `host.tick` on every iteration.
fn spinner() -> Vec<u8> {
    let types = section(1, vec_of(vec![vec![0x60, 0x00, 0x00]]));
    let imports = section(
        2,
        vec_of(vec![
            [name("host"), name("tick"), vec![0x00, 0x00]].concat(),
        ]),
    );
    let funcs = section(3, vec_of(vec![vec![0], vec![0]]));
    let exports = section(
        7,
        vec_of(vec![
            [name("spin"), vec![0x00, 0x01]].concat(),
            [name("spin_calling"), vec![0x00, 0x02]].concat(),
        ]),
    );
    let spin = body(&[], vec![0x03, 0x40, 0x0c, 0x00, 0x0b]);
    let spin_calling = body(&[], vec![0x03, 0x40, 0x10, 0x00, 0x0c, 0x00, 0x0b]);
    let code = section(10, vec_of(vec![spin, spin_calling]));
    [
        b"\0asm\x01\0\0\0".to_vec(),
        types,
        imports,
        funcs,
        exports,
        code,
    ]
    .concat()
}

/// Runs `export` as call.rs runs a hook: guard held, deadline 1, yield each tick, interrupt
/// past the deadline. Returns how long it took and whether it trapped with `Interrupt`.
async fn run_spinner(
    engine: &Engine,
    module: &Module,
    export: &str,
    timeout: Duration,
) -> (Duration, bool) {
    let started = Instant::now();
    let mut store = Store::new(engine, ());
    let deadline = started + timeout;
    let _ticking = crate::epoch::arm(&mut store, deadline);
    let mut linker = wasmtime::Linker::new(engine);
    linker
        .func_wrap("host", "tick", || std::hint::black_box(()))
        .unwrap();
    let instance = linker.instantiate_async(&mut store, module).await.unwrap();
    let f = instance
        .get_typed_func::<(), ()>(&mut store, export)
        .unwrap();
    let err = f.call_async(&mut store, ()).await.unwrap_err();
    let interrupted = matches!(
        err.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    );
    (started.elapsed(), interrupted)
}

fn spin_engine() -> (Engine, Module) {
    let (engine, _) = build(8, SlotReset::PagemapScan, None).unwrap();
    crate::epoch::start_ticker(&engine);
    let module = Module::new(&engine, spinner()).unwrap();
    (engine, module)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_an_endless_loop_is_interrupted_at_its_timeout() {
    let (engine, module) = spin_engine();
    for export in ["spin", "spin_calling"] {
        let (took, interrupted) =
            run_spinner(&engine, &module, export, Duration::from_millis(200)).await;
        assert!(interrupted, "{export}");
        // Well below the ticker's 30 s idle check (a ticker not woken by the call), with room
        // for a loaded machine.
        assert!(took < Duration::from_secs(5), "{export}: {took:?}");
        assert!(took >= Duration::from_millis(200), "{export}: {took:?}");
    }
}

/// Many short calls start and end (taking and dropping the ticker's guard) while one guest
/// loops; the loop is still interrupted at its deadline, and so are several loops at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attack_loops_are_interrupted_while_other_calls_come_and_go() {
    let (engine, module) = spin_engine();
    let engine = Arc::new(engine);
    let churn = {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let guards: Vec<_> = (0..20).map(|_| crate::epoch::running()).collect();
                drop(guards);
                std::thread::yield_now();
            }
        });
        (stop, h)
    };
    let mut loops = Vec::new();
    for k in 0..4u64 {
        let (engine, module) = (engine.clone(), module.clone());
        loops.push(tokio::spawn(async move {
            let export = if k % 2 == 0 { "spin" } else { "spin_calling" };
            run_spinner(
                &engine,
                &module,
                export,
                Duration::from_millis(150 + 50 * k),
            )
            .await
        }));
    }
    for (k, l) in loops.into_iter().enumerate() {
        let (took, interrupted) = l.await.unwrap();
        assert!(interrupted, "loop {k}");
        assert!(took < Duration::from_secs(5), "loop {k}: {took:?}");
    }
    churn.0.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.1.join().unwrap();
}

/// A guest whose start function loops is interrupted while it is being instantiated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_a_start_function_that_loops_is_interrupted() {
    let (engine, _) = build(2, SlotReset::PagemapScan, None).unwrap();
    crate::epoch::start_ticker(&engine);
    let types = section(1, vec_of(vec![vec![0x60, 0x00, 0x00]]));
    let funcs = section(3, vec_of(vec![vec![0]]));
    let start = section(8, uleb(0));
    let code = section(
        10,
        vec_of(vec![body(&[], vec![0x03, 0x40, 0x0c, 0x00, 0x0b])]),
    );
    let bytes = [b"\0asm\x01\0\0\0".to_vec(), types, funcs, start, code].concat();
    let module = Module::new(&engine, bytes).unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_millis(200);
    let mut store = Store::new(&engine, ());
    let _ticking = crate::epoch::arm(&mut store, deadline);
    let err = Instance::new_async(&mut store, &module, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(wasmtime::Trap::Interrupt)
        ),
        "{err:#}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

// --- a dirty page that is swapped out is reset (the page-map reset failed this: not used) ---

unsafe extern "C" {
    fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
}

/// Asks the kernel to swap the page at `addr` out; whether it did, by the page map's
/// "swapped" bit (62).
fn page_out(addr: *mut u8) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const MADV_PAGEOUT: i32 = 21;
    let page = (addr as usize) & !4095;
    // SAFETY: a page of a live linear memory; MADV_PAGEOUT keeps its contents.
    let rc = unsafe { madvise(page as *mut _, 4096, MADV_PAGEOUT) };
    if rc != 0 {
        return false;
    }
    let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
    f.seek(SeekFrom::Start((page / 4096 * 8) as u64)).unwrap();
    let mut entry = [0u8; 8];
    f.read_exact(&mut entry).unwrap();
    u64::from_le_bytes(entry) & (1 << 62) != 0
}

/// The page-map scan resets only pages that are written, present and anonymous; a written page
/// the kernel has swapped out is not present, so it is neither copied back nor decommitted
/// (the walk reaches the end of memory: nothing is decommitted) and the next instance in the
/// slot reads the previous one's bytes. Needs swap; without it the page cannot be swapped out
/// and the test says so and passes.
#[test]
fn attack_a_swapped_out_dirty_page_is_reset() {
    let memory = section(5, vec_of(vec![[vec![0x01], uleb(4), uleb(64)].concat()]));
    let export = section(7, vec_of(vec![[name("mem"), vec![0x02, 0x00]].concat()]));
    let bytes = [b"\0asm\x01\0\0\0".to_vec(), memory, export].concat();
    for reset in [DEFAULT_SLOT_RESET] {
        let (engine, _) = build(1, reset, None).unwrap();
        let module = Module::new(&engine, &bytes).unwrap();
        // page 2: inside the 64 KiB kept resident; and one far past it.
        for at in [8192usize, 3 << 20] {
            let mut store = Store::new(&engine, ());
            let i = Instance::new(&mut store, &module, &[]).unwrap();
            let mem = i.get_memory(&mut store, "mem").unwrap();
            mem.grow(&mut store, 60).unwrap();
            mem.data_mut(&mut store)[at..at + 8].copy_from_slice(b"SECRET!!");
            let swapped = page_out(mem.data_ptr(&store).wrapping_add(at));
            drop(store);
            if !swapped {
                eprintln!(
                    "{reset:?} at {at}: the page was not swapped out (no swap?): nothing shown"
                );
                continue;
            }
            let mut store = Store::new(&engine, ());
            let i = Instance::new(&mut store, &module, &[]).unwrap();
            let mem = i.get_memory(&mut store, "mem").unwrap();
            mem.grow(&mut store, 60).unwrap();
            assert_eq!(
                &mem.data(&store)[at..at + 8],
                &[0u8; 8],
                "{reset:?}: the previous instance's swapped-out page at {at} survived the reset"
            );
        }
    }
}

// --- which pages the previous call wrote, by timing first touches (the page-map reset told) ---

/// Imports `host.now() -> i64` (nanoseconds, as `wasi:clocks/monotonic-clock.now` gives a
/// guest); exports `mem` (1 page, max 1024), `grow()`, `touch_time(page) -> i64` (the time of
/// one load from the page) and `write(page)` (stores a word in it).
fn timer_module() -> Vec<u8> {
    let types = section(
        1,
        vec_of(vec![
            vec![0x60, 0x00, 0x01, I64],      // () -> i64
            vec![0x60, 0x01, I32, 0x01, I64], // (i32) -> i64
            vec![0x60, 0x01, I32, 0x00],      // (i32) -> ()
            vec![0x60, 0x00, 0x00],           // () -> ()
        ]),
    );
    let imports = section(
        2,
        vec_of(vec![[name("host"), name("now"), vec![0x00, 0x00]].concat()]),
    );
    let funcs = section(3, vec_of(vec![vec![1], vec![2], vec![3]]));
    let memory = section(5, vec_of(vec![[vec![0x01], uleb(1), uleb(64)].concat()]));
    let exports = section(
        7,
        vec_of(vec![
            [name("mem"), vec![0x02, 0x00]].concat(),
            [name("touch_time"), vec![0x00, 0x01]].concat(),
            [name("write"), vec![0x00, 0x02]].concat(),
            [name("grow"), vec![0x00, 0x03]].concat(),
        ]),
    );
    // touch_time(page): t = now(); load [page * 4096]; now() - t   (local 1: t)
    let touch = body(
        &[(1, I64)],
        [
            vec![0x10, 0x00],
            lset(1),
            lget(0),
            i32c(12),
            vec![0x74],
            mem_op(0x29, 3, 0),
            vec![0x1a],
            vec![0x10, 0x00],
            lget(1),
            vec![0x7d], // i64.sub
        ]
        .concat(),
    );
    let write = body(
        &[],
        [
            lget(0),
            i32c(12),
            vec![0x74],
            i64c(0x5ec7e7),
            mem_op(0x37, 3, 0),
        ]
        .concat(),
    );
    let code = section(10, vec_of(vec![touch, write, body(&[], grow_mem(0))]));
    [
        b"\0asm\x01\0\0\0".to_vec(),
        types,
        imports,
        funcs,
        memory,
        exports,
        code,
    ]
    .concat()
}

/// A call writes a few pages (its "secret" access pattern); the next call in the slot times a
/// first load from every page. With the page-map reset the pages the previous call wrote are
/// still resident (copied back, not decommitted) and load without a page fault, the others
/// fault in the zero page: the next call reads the previous call's write set off the clock.
/// With the madvise reset every page past the first 64 KiB faults alike.
#[test]
fn attack_the_next_call_cannot_tell_which_pages_the_previous_wrote() {
    let secret: [i32; 6] = [40, 97, 300, 512, 777, 1000];
    for reset in [DEFAULT_SLOT_RESET] {
        let mut hits = 0;
        let rounds = 5;
        for _ in 0..rounds {
            // A slot as a call finds it after a reset that decommitted (a fresh pool here).
            let (engine, _) = build(1, reset, None).unwrap();
            let module = Module::new(&engine, timer_module()).unwrap();
            let origin = Instant::now();
            let mut linker = wasmtime::Linker::new(&engine);
            linker
                .func_wrap("host", "now", move || origin.elapsed().as_nanos() as i64)
                .unwrap();
            {
                let mut store = Store::new(&engine, ());
                store.set_epoch_deadline(u64::MAX / 2);
                let i = linker.instantiate(&mut store, &module).unwrap();
                i.get_typed_func::<(), ()>(&mut store, "grow")
                    .unwrap()
                    .call(&mut store, ())
                    .unwrap();
                let w = i.get_typed_func::<i32, ()>(&mut store, "write").unwrap();
                for p in secret {
                    w.call(&mut store, p).unwrap();
                }
            }
            let mut store = Store::new(&engine, ());
            store.set_epoch_deadline(u64::MAX / 2);
            let i = linker.instantiate(&mut store, &module).unwrap();
            i.get_typed_func::<(), ()>(&mut store, "grow")
                .unwrap()
                .call(&mut store, ())
                .unwrap();
            let t = i
                .get_typed_func::<i32, i64>(&mut store, "touch_time")
                .unwrap();
            // Past the first 64 KiB (16 pages) only.
            let mut times: Vec<(i64, i32)> = (16..1024)
                .map(|p| (t.call(&mut store, p).unwrap(), p))
                .collect();
            times.sort();
            let mut fastest: Vec<i32> = times[..secret.len()].iter().map(|(_, p)| *p).collect();
            fastest.sort();
            if fastest == secret {
                hits += 1;
            }
            eprintln!(
                "{reset:?}: fastest pages {fastest:?}, slowest {:?}",
                times.last()
            );
        }
        assert!(
            hits < rounds,
            "{reset:?}: the pages the previous call wrote were the fastest to touch in every round"
        );
    }
}
