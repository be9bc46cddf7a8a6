# industry-sms: the two commands that matter are `make run` and `make test`.
# Both install what is missing on a fresh machine (Rust components, the Kafka
# jars, the chDB engine) and start the local services themselves.

.PHONY: run stop test bench services-up services-down services-status lint

## Start Kafka, ClickHouse, the carrier simulator and every service; send sample traffic.
run:
	deploy/run.sh

## Stop everything `make run` started (data stays under var/).
stop:
	deploy/run.sh stop

## Start the services the tests need, run lint and the whole test suite, stop them.
test:
	deploy/test.sh

## Benchmarks (not part of `make test`); figures go to var/bench/ and the README.
bench:
	deploy/bench.sh

services-up:
	deploy/local-services.sh up

services-down:
	deploy/local-services.sh down

services-status:
	deploy/local-services.sh status

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
