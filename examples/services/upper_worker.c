/*
 * An MDP/0.1 worker in C on libzmq alone: no Brubeck, no broker library.
 *
 * It registers for a service ("upper" by default) and answers every request with the same
 * body frames, the last one in ASCII upper case. A Brubeck payload is two frames, an
 * encoding tag then the data (docs/services.md), so a "text" payload comes back as upper-case
 * text, tag unchanged. It heartbeats, takes the broker for dead after LIVENESS silent
 * heartbeats and registers again on a new socket, and says DISCONNECT on SIGINT or SIGTERM.
 *
 * Build: gcc -O2 -o upper_worker upper_worker.c -lzmq      (Debian: apt-get install libzmq3-dev)
 * Run:   ./upper_worker tcp://127.0.0.1:5555 [service [heartbeat_ms]]
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define LIVENESS 3
#define MAX_FRAMES 64

#define CMD_READY 0x01
#define CMD_REQUEST 0x02
#define CMD_REPLY 0x03
#define CMD_HEARTBEAT 0x04
#define CMD_DISCONNECT 0x05

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One multipart message, received whole; frames past MAX_FRAMES make it invalid. */
typedef struct {
    zmq_msg_t frame[MAX_FRAMES];
    int count;
    int too_long;
} message_t;

static void message_close(message_t *m) {
    for (int i = 0; i < m->count; i++) zmq_msg_close(&m->frame[i]);
    m->count = 0;
}

/* Returns 0, or -1 when interrupted or the socket failed (nothing is kept then). */
static int message_recv(message_t *m, void *sock) {
    m->count = 0;
    m->too_long = 0;
    int more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            message_close(m);
            return -1;
        }
        more = zmq_msg_more(&part);
        if (m->count < MAX_FRAMES) {
            zmq_msg_init(&m->frame[m->count]);
            zmq_msg_move(&m->frame[m->count], &part);
            m->count++;
        } else {
            m->too_long = 1;
        }
        zmq_msg_close(&part);
    }
    return 0;
}

static size_t frame_size(message_t *m, int i) { return zmq_msg_size(&m->frame[i]); }

static const char *frame_data(message_t *m, int i) { return zmq_msg_data(&m->frame[i]); }

static void send_frame(void *sock, const void *data, size_t size, int more) {
    while (zmq_send(sock, data, size, more ? ZMQ_SNDMORE : 0) < 0 && errno == EINTR) {
    }
}

/* The header every worker command starts with: empty frame, "MDPW01", command byte. */
static void send_header(void *sock, unsigned char command, int more) {
    send_frame(sock, "", 0, 1);
    send_frame(sock, "MDPW01", 6, 1);
    send_frame(sock, &command, 1, more);
}

static void send_ready(void *sock, const char *service) {
    send_header(sock, CMD_READY, 1);
    send_frame(sock, service, strlen(service), 0);
}

/* REQUEST frames: "", MDPW01, 0x02, client address, "", body... The reply keeps the address
 * and every body frame, the last one upper-cased. */
static void send_reply(void *sock, message_t *request) {
    send_header(sock, CMD_REPLY, 1);
    send_frame(sock, frame_data(request, 3), frame_size(request, 3), 1);
    send_frame(sock, "", 0, 1);
    int last = request->count - 1;
    for (int i = 5; i < last; i++) send_frame(sock, frame_data(request, i), frame_size(request, i), 1);
    size_t size = frame_size(request, last);
    char *upper = malloc(size ? size : 1);
    if (upper == NULL) {
        perror("upper_worker: malloc");
        exit(1);
    }
    const char *data = frame_data(request, last);
    for (size_t i = 0; i < size; i++) {
        char c = data[i];
        upper[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    send_frame(sock, upper, size, 0);
    free(upper);
}

static void *open_link(void *ctx, const char *broker, const char *service) {
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, broker) != 0) {
        fprintf(stderr, "upper_worker: cannot connect to %s: %s\n", broker, zmq_strerror(errno));
        exit(2);
    }
    send_ready(sock, service);
    fprintf(stderr, "upper_worker: ready for '%s' at %s\n", service, broker);
    return sock;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s BROKER_ADDRESS [SERVICE [HEARTBEAT_MS]]\n", argv[0]);
        return 2;
    }
    const char *broker = argv[1];
    const char *service = argc > 2 ? argv[2] : "upper";
    int64_t heartbeat = argc > 3 ? atoll(argv[3]) : 1000;
    if (heartbeat <= 0) heartbeat = 1000;

    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal; /* no SA_RESTART: zmq_poll returns EINTR */
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

    void *ctx = zmq_ctx_new();
    void *sock = open_link(ctx, broker, service);
    int64_t heard = now_ms(), sent = heard;

    while (!stopping) {
        int64_t now = now_ms();
        int64_t wake = heard + LIVENESS * heartbeat;
        if (sent + heartbeat < wake) wake = sent + heartbeat;
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int ready = zmq_poll(&item, 1, (long)(wake > now ? wake - now : 0));
        if (ready < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "upper_worker: poll failed: %s\n", zmq_strerror(errno));
            break;
        }
        int reconnect = 0;
        if (item.revents & ZMQ_POLLIN) {
            message_t msg;
            if (message_recv(&msg, sock) != 0) continue;
            heard = now_ms();
            int valid = !msg.too_long && msg.count >= 3 && frame_size(&msg, 0) == 0 &&
                        frame_size(&msg, 1) == 6 && memcmp(frame_data(&msg, 1), "MDPW01", 6) == 0 &&
                        frame_size(&msg, 2) == 1;
            unsigned char command = valid ? (unsigned char)frame_data(&msg, 2)[0] : 0;
            if (command == CMD_REQUEST && msg.count >= 6 && frame_size(&msg, 4) == 0) {
                send_reply(sock, &msg);
                sent = now_ms();
            } else if (command == CMD_DISCONNECT) {
                fprintf(stderr, "upper_worker: the broker asked us to reconnect\n");
                reconnect = 1;
            } else if (command != CMD_HEARTBEAT) {
                fprintf(stderr, "upper_worker: dropped an invalid message (%d frames)\n", msg.count);
            }
            message_close(&msg);
        }
        now = now_ms();
        if (!reconnect && now - heard >= LIVENESS * heartbeat) {
            fprintf(stderr, "upper_worker: heard nothing from the broker; reconnecting\n");
            reconnect = 1;
        }
        if (reconnect) {
            zmq_close(sock);
            struct timespec pause = {heartbeat / 1000, (heartbeat % 1000) * 1000000};
            nanosleep(&pause, NULL);
            if (stopping) {
                sock = NULL;
                break;
            }
            sock = open_link(ctx, broker, service);
            heard = sent = now_ms();
        } else if (now - sent >= heartbeat) {
            send_header(sock, CMD_HEARTBEAT, 0);
            sent = now;
        }
    }
    if (sock != NULL) {
        send_header(sock, CMD_DISCONNECT, 0);
        int linger = 500; /* let the DISCONNECT leave */
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(sock);
    }
    zmq_ctx_term(ctx);
    return 0;
}
