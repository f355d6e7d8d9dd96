//! Engine hot paths: label selector matching (allocation-free) and quantity parsing.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keelson_engine::{Quantity, Selector};
use std::collections::BTreeMap;
use std::hint::black_box;

fn selectors(c: &mut Criterion) {
    let labels: BTreeMap<String, String> =
        [("app", "web"), ("tier", "frontend"), ("zone", "zone-2"), ("release", "stable")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let selector = Selector::parse("app=web,tier in (frontend,backend),!canary,zone notin (zone-9)").expect("selector");
    let mut group = c.benchmark_group("selector");
    group.throughput(Throughput::Elements(1));
    group.bench_function("match_4_requirements", |b| b.iter(|| selector.matches(black_box(&labels))));
    group.bench_function("parse", |b| {
        b.iter(|| Selector::parse(black_box("app=web,tier in (frontend,backend),!canary")))
    });
    group.finish();
}

fn quantities(c: &mut Criterion) {
    let mut group = c.benchmark_group("quantity");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_500Mi", |b| b.iter(|| black_box("500Mi").parse::<Quantity>()));
    group.bench_function("parse_100m", |b| b.iter(|| black_box("100m").parse::<Quantity>()));
    group.finish();
}

criterion_group!(benches, selectors, quantities);
criterion_main!(benches);
