//! Store hot paths: durable commit with 1/16/256 writes in flight, get, list of 1,000
//! keys, and watch fan-out to 1,000 and 10,000 watchers.
//!
//! "N concurrent writers" is modelled as a window of N writes in flight from one
//! thread (submit N, then submit one more each time the oldest is acknowledged): the
//! committer sees exactly N waiting writers, without N OS threads adding noise.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keelson_engine::Revision;
use keelson_store::{ListOptions, Pending, ReadAt, Store, StoreConfig, WatchItem, Watcher};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn open() -> (tempfile::TempDir, Arc<Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), StoreConfig::default()).expect("open store");
    (dir, store)
}

/// Creates `count` keys keeping `window` writes in flight; returns the elapsed time.
fn write_windowed(store: &Store, next_key: &mut u64, count: u64, window: usize, value: &Bytes) -> Duration {
    let started = Instant::now();
    let mut in_flight: VecDeque<Pending> = VecDeque::with_capacity(window);
    for _ in 0..count {
        if in_flight.len() == window {
            in_flight.pop_front().expect("window is full").wait().expect("write");
        }
        *next_key += 1;
        in_flight.push_back(store.create(format!("/registry/configmaps/bench/{next_key:012}"), value.clone()));
    }
    for pending in in_flight {
        pending.wait().expect("write");
    }
    started.elapsed()
}

fn commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_durable");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    for value_size in [256usize, 1024] {
        for writers in [1usize, 16, 256] {
            let (_dir, store) = open();
            let value = Bytes::from(vec![b'x'; value_size]);
            let mut next_key = 0u64;
            group.throughput(Throughput::Elements(1));
            group.bench_with_input(BenchmarkId::new(format!("{value_size}B"), writers), &writers, |b, &writers| {
                b.iter_custom(|iters| write_windowed(&store, &mut next_key, iters, writers, &value));
            });
        }
    }
    group.finish();
}

fn reads(c: &mut Criterion) {
    let (_dir, store) = open();
    let value = Bytes::from(vec![b'x'; 1024]);
    let mut next_key = 0;
    write_windowed(&store, &mut next_key, 10_000, 256, &value);
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("get_latest", |b| {
        b.iter(|| {
            i = i % 10_000 + 1;
            store.get(format!("/registry/configmaps/bench/{i:012}").as_bytes(), ReadAt::Latest).expect("get")
        })
    });
    group.throughput(Throughput::Elements(1000));
    group.bench_function("list_1000", |b| {
        b.iter(|| {
            let page = store
                .list(b"/registry/configmaps/bench/", &ListOptions { limit: 1000, ..Default::default() })
                .expect("list");
            assert_eq!(page.items.len(), 1000);
            page
        })
    });
    group.finish();
}

/// Drains every watcher until it has seen `until`; returns events delivered.
fn drain(watchers: &mut [Watcher], until: Revision) -> u64 {
    let mut delivered = 0;
    for watcher in watchers.iter_mut() {
        while watcher.seen_through() < until {
            match watcher.next_timeout(Duration::from_secs(10)).expect("watch") {
                Some(WatchItem::Events(batch)) => delivered += batch.iter().count() as u64,
                Some(WatchItem::Progress(_)) => {}
                None => panic!("watcher stalled"),
            }
        }
    }
    delivered
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch_fan_out");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    const EVENTS: u64 = 1000;
    for watchers in [1_000usize, 10_000] {
        let (_dir, store) = open();
        let value = Bytes::from(vec![b'x'; 1024]);
        let mut next_key = 0;
        let mut all: Vec<Watcher> = (0..watchers)
            .map(|_| store.watch("/registry/configmaps/", store.current_revision()).expect("watch"))
            .collect();
        group.throughput(Throughput::Elements(EVENTS * watchers as u64));
        group.bench_with_input(BenchmarkId::from_parameter(watchers), &watchers, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    write_windowed(&store, &mut next_key, EVENTS, 256, &value);
                    let until = store.current_revision();
                    let started = Instant::now();
                    let delivered = drain(&mut all, until);
                    total += started.elapsed();
                    assert_eq!(delivered, EVENTS * watchers as u64);
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, commit, reads, fan_out);
criterion_main!(benches);
