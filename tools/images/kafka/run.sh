#!/bin/bash
# Start one Kafka node (KRaft) configured from the environment, as the official apache/kafka
# image does: every KAFKA_<NAME> variable becomes the property <name>, with `_` → `.`,
# `__` → `_` and `___` → `-` (KAFKA_LISTENER_SECURITY_PROTOCOL_MAP → listener.security.protocol.map);
# the JVM variables (KAFKA_HEAP_OPTS, KAFKA_OPTS, …) are not properties. Without any, a single
# broker+controller on :9092/:9093 (advertised as localhost:9092). CLUSTER_ID formats the data
# directory on first start (default: a fixed id, like the official image).
set -euo pipefail

CONFIG_DIR="${KAFKA_CONFIG_DIR:-/tmp/kafka-config}"   # /tmp: works with a read-only root filesystem
mkdir -p "$CONFIG_DIR"
PROPS="$CONFIG_DIR/server.properties"
LOG4J="$CONFIG_DIR/log4j2.properties"

cat >"$PROPS" <<PROPERTIES
# defaults: one node, broker and controller
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://:9092,CONTROLLER://:9093
advertised.listeners=PLAINTEXT://localhost:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
controller.quorum.voters=1@localhost:9093
log.dirs=/var/lib/kafka/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# from the environment (a key given again overrides the default above)
PROPERTIES

not_properties=" KAFKA_HEAP_OPTS KAFKA_JVM_PERFORMANCE_OPTS KAFKA_OPTS KAFKA_LOG4J_OPTS KAFKA_JMX_OPTS KAFKA_GC_LOG_OPTS \
KAFKA_DEBUG KAFKA_VERSION KAFKA_CONFIG_DIR KAFKA_LOG4J_ROOT_LOGLEVEL KAFKA_LOG4J_LOGGERS KAFKA_TOOLS_LOG4J_LOGLEVEL \
KAFKA_JMX_HOSTNAME KAFKA_JMX_PORT "
while IFS= read -r name; do
  [[ "$name" == KAFKA_* && "$not_properties" != *" $name "* ]] || continue
  key="${name#KAFKA_}"
  key="${key,,}"
  key="${key//___/-}"
  key="${key//__/@}"
  key="${key//_/.}"
  key="${key//@/_}"
  printf '%s=%s\n' "$key" "${!name}" >>"$PROPS"
done < <(compgen -e)

cat >"$LOG4J" <<'LOG4J2'
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.okafka.name = org.apache.kafka
logger.okafka.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
LOG4J2

# shellcheck disable=SC2206
java=(java ${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m} ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC} ${KAFKA_OPTS:-}
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J" -cp "/opt/kafka/libs/*")

# Format on first start only (--ignore-formatted keeps an existing data directory).
"${java[@]}" kafka.tools.StorageTool format -t "${CLUSTER_ID:-5L6g3nShT-eMCtK--X86sw}" -c "$PROPS" --ignore-formatted >/dev/null
exec "${java[@]}" kafka.Kafka "$PROPS"
