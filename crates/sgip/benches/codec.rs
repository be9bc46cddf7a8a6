//! Encode and decode throughput of a 70-character Chinese Submit (one full UCS-2 segment).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sgip::client::SubmitRequest;
use sgip::text::{self, CodingChoice};
use sgip::{Body, Pdu, SequenceGenerator};

fn submit_pdu() -> Pdu {
    let message = "您好，您的机动车将于本月到期，请及时办理年检手续，逾期未检将影响正常使用和出行安全，谢谢配合！交管";
    let message: String = message.chars().cycle().take(70).collect();
    let segment = text::split(&message, CodingChoice::Auto, 1)
        .expect("70 characters fit one segment")
        .remove(0);
    assert_eq!(segment.content.len(), 140);
    let request = SubmitRequest::new("18612341234", "10655012123", "TRAFFIC", segment);
    let submit = request.to_submit().expect("valid request");
    Pdu::new(
        SequenceGenerator::new(3075512345).next(),
        Body::Submit(submit),
    )
}

fn codec(c: &mut Criterion) {
    let pdu = submit_pdu();
    let mut group = c.benchmark_group("submit_70_chinese_chars");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(4096);
        b.iter(|| {
            buf.clear();
            std::hint::black_box(&pdu).encode(&mut buf);
            std::hint::black_box(buf.len());
        })
    });
    let wire = pdu.to_bytes();
    group.bench_function("decode", |b| {
        b.iter(|| Pdu::decode(std::hint::black_box(wire.clone())).expect("decodes"))
    });
    group.bench_function("encode_decode", |b| {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        b.iter(|| {
            if buf.capacity() - buf.len() < 512 {
                buf = BytesMut::with_capacity(64 * 1024);
            }
            std::hint::black_box(&pdu).encode(&mut buf);
            let frame = buf.split().freeze();
            Pdu::decode(frame).expect("decodes")
        })
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
