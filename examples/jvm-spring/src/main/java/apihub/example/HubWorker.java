package apihub.example;

import java.time.Duration;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.requestreply.ReplyingKafkaTemplate;
import org.springframework.kafka.requestreply.RequestReplyFuture;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.kafka.support.TopicPartitionOffset;

/**
 * A worker calling the brokers through API Hub with Spring Kafka's {@link ReplyingKafkaTemplate} and its
 * defaults: the template's own correlation ids (16 random bytes in {@code kafka_correlationId}) and a reply
 * container on partition 0 of the response topic, which the template names in {@code kafka_replyTopic} and
 * {@code kafka_replyPartition}. The request body follows schemas/api-request.schema.json and leaves the
 * reply address to those headers (docs/CONTRACT.md).
 *
 * <p>Usage: {@code HubWorker BOOTSTRAP REQUEST_TOPIC RESPONSE_TOPIC CALLER PROVIDER/TR_ID=PARAMS_JSON...};
 * prints one JSON line per answer: the correlation id sent, the answer's headers (hex) and its body.
 */
public final class HubWorker {
    private static final Duration REPLY_TIMEOUT = Duration.ofSeconds(60);
    private static final long DEADLINE_MS = 30_000;

    private HubWorker() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 5) {
            System.err.println("usage: HubWorker BOOTSTRAP REQUEST_TOPIC RESPONSE_TOPIC CALLER PROVIDER/TR_ID=JSON...");
            System.exit(2);
        }
        String bootstrap = args[0];
        String requestTopic = args[1];
        String responseTopic = args[2];
        String caller = args[3];

        var producers = new DefaultKafkaProducerFactory<String, String>(Map.of(
                ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class,
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class));
        var consumers = new DefaultKafkaConsumerFactory<String, String>(Map.of(
                ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap,
                ConsumerConfig.GROUP_ID_CONFIG, caller + "-replies",
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false,
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class));

        // Partition 0 of the response topic, read from its current end: answers to earlier requests are not ours.
        var partition = new TopicPartition(responseTopic, 0);
        long start;
        try (Consumer<String, String> probe = consumers.createConsumer()) {
            start = probe.endOffsets(List.of(partition), Duration.ofSeconds(30)).get(partition);
        }
        var container = new KafkaMessageListenerContainer<>(
                consumers, new ContainerProperties(new TopicPartitionOffset(responseTopic, 0, start)));
        var template = new ReplyingKafkaTemplate<>(producers, container);
        template.start();
        try {
            for (int i = 4; i < args.length; i++) {
                call(template, requestTopic, caller, args[i]);
            }
        } finally {
            template.stop();
            template.destroy(); // also ends the scheduler it made for reply timeouts (a non-daemon thread)
            producers.reset();
        }
    }

    private static void call(
            ReplyingKafkaTemplate<String, String, String> template, String requestTopic, String caller, String spec)
            throws Exception {
        int slash = spec.indexOf('/');
        int equals = spec.indexOf('=');
        String provider = spec.substring(0, slash);
        String trId = spec.substring(slash + 1, equals);
        String params = spec.substring(equals + 1);
        long now = System.currentTimeMillis();
        String body = "{\"request_id\":" + quote(UUID.randomUUID().toString())
                + ",\"provider\":" + quote(provider)
                + ",\"tr_id\":" + quote(trId)
                + ",\"params\":" + params
                + ",\"caller\":" + quote(caller)
                + ",\"deadline_ms\":" + (now + DEADLINE_MS)
                + ",\"created_at_ms\":" + now + "}";
        // The key is the limit domain: the provider (or PROVIDER/credential).
        var record = new ProducerRecord<String, String>(requestTopic, provider, body);
        RequestReplyFuture<String, String, String> future = template.sendAndReceive(record, REPLY_TIMEOUT);
        byte[] sent = future.getSendFuture().get(30, TimeUnit.SECONDS)
                .getProducerRecord().headers().lastHeader(KafkaHeaders.CORRELATION_ID).value();
        ConsumerRecord<String, String> reply = future.get(REPLY_TIMEOUT.toSeconds() + 5, TimeUnit.SECONDS);
        var hex = HexFormat.of();
        var headers = new StringBuilder();
        for (Header header : reply.headers()) {
            headers.append(headers.isEmpty() ? "" : ",")
                    .append(quote(header.key())).append(':').append(quote(hex.formatHex(header.value())));
        }
        System.out.println("{\"call\":" + quote(spec.substring(0, equals))
                + ",\"sent_correlation_id\":" + quote(hex.formatHex(sent))
                + ",\"partition\":" + reply.partition()
                + ",\"key\":" + quote(reply.key() == null ? "" : reply.key())
                + ",\"headers\":{" + headers + "}"
                + ",\"response\":" + reply.value() + "}");
        System.out.flush();
    }

    private static String quote(String text) {
        var out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
