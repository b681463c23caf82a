// grpc_bench.cc - closed-loop load generator for grpc_echo_server, the gRPC
// counterpart of mprpc_bench.c with the same options and RESULT line
// (bench_common.h, hist.h).
//
// Uses the async completion-queue API: one CompletionQueue per client
// thread, C channels (each its own TCP connection: local subchannel pool)
// spread round-robin over the threads, D unary calls in flight per channel.
// Each completion is checked (echoed payload == sent payload), its latency
// recorded, and a new call is started at once.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench_common.h"
#include "echo.grpc.pb.h"

namespace {

using mprpcbench::EchoRequest;
using mprpcbench::EchoResponse;
using mprpcbench::EchoService;

bench_opts opts;
const uint8_t *pattern;
int phase = BENCH_WARMUP;

struct Worker;

struct Conn {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<EchoService::Stub> stub;
    Worker *worker = nullptr;
    uint32_t next_id = 0;
};

struct Call {
    Conn *conn;
    uint32_t id;
    uint64_t t_send_ns;
    grpc::ClientContext ctx;
    EchoRequest req;
    EchoResponse resp;
    grpc::Status status;
    std::unique_ptr<grpc::ClientAsyncResponseReader<EchoResponse>> reader;
};

struct Worker {
    std::thread th;
    grpc::CompletionQueue cq;
    std::vector<Conn *> conns;
    long outstanding = 0;
    uint64_t errors = 0;
    bool drained = false;
    hist h;
};

void start_call(Conn *c)
{
    Call *call = new Call;
    call->conn = c;
    call->id = c->next_id++;
    call->req.set_payload(bench_payload(pattern, call->id), opts.size);
    call->t_send_ns = bench_now_ns();
    call->reader = c->stub->AsyncEcho(&call->ctx, call->req, &c->worker->cq);
    call->reader->Finish(&call->resp, &call->status, call);
    c->worker->outstanding++;
}

void worker_main(Worker *w)
{
    for (Conn *c : w->conns)
        for (int k = 0; k < opts.depth; k++)
            start_call(c);

    uint64_t stop_seen_ns = 0;
    while (w->outstanding > 0) {
        void *tag;
        bool ok;
        auto st = w->cq.AsyncNext(&tag, &ok,
                                  std::chrono::system_clock::now() + std::chrono::milliseconds(100));
        if (st == grpc::CompletionQueue::TIMEOUT) {
            if (bench_phase_get(&phase) == BENCH_STOP) {
                if (!stop_seen_ns)
                    stop_seen_ns = bench_now_ns();
                else if (bench_now_ns() - stop_seen_ns > 5000000000ull)
                    break;  // server hung: give up on the calls still in flight
            }
            continue;
        }
        if (st != grpc::CompletionQueue::GOT_EVENT)
            break;

        uint64_t now = bench_now_ns();
        int ph = bench_phase_get(&phase);
        Call *call = static_cast<Call *>(tag);
        Conn *c = call->conn;
        bool failed = !ok || !call->status.ok();
        w->outstanding--;
        if (failed) {
            // Like a dead connection in mprpc_bench: count it, stop this slot.
            fprintf(stderr, "call failed: %s\n", call->status.error_message().c_str());
            w->errors++;
        } else {
            const std::string &p = call->resp.payload();
            if (p.size() != opts.size ||
                memcmp(p.data(), bench_payload(pattern, call->id), p.size()) != 0)
                w->errors++;
            else if (ph == BENCH_MEASURE)
                hist_record(&w->h, now - call->t_send_ns);
        }
        delete call;
        if (ph != BENCH_STOP && !failed)
            start_call(c);
    }
    if (w->outstanding == 0) {
        w->cq.Shutdown();
        void *tag;
        bool ok;
        while (w->cq.Next(&tag, &ok)) {
        }
        w->drained = true;
    }
}

}  // namespace

int main(int argc, char **argv)
{
    bench_parse_opts(argc, argv, &opts, "grpc");
    if (opts.list_protos) {
        printf("grpc\n");
        return 0;
    }
    pattern = bench_pattern_new(opts.size);

    std::vector<std::unique_ptr<Worker>> workers;
    for (int t = 0; t < opts.threads; t++) {
        workers.emplace_back(new Worker);
        hist_init(&workers.back()->h);
    }

    std::string target = std::string(opts.host) + ":" + std::to_string(opts.port);
    std::vector<std::unique_ptr<Conn>> conns;
    for (int i = 0; i < opts.conns; i++) {
        grpc::ChannelArguments args;
        args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one TCP connection per channel
        args.SetInt("mprpcbench.conn", i);
        std::unique_ptr<Conn> c(new Conn);
        c->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
        if (!c->channel->WaitForConnected(std::chrono::system_clock::now() +
                                          std::chrono::seconds(5))) {
            fprintf(stderr, "%s: cannot connect to %s\n", argv[0], target.c_str());
            return 1;
        }
        c->stub = EchoService::NewStub(c->channel);
        c->worker = workers[(size_t)i % workers.size()].get();
        c->worker->conns.push_back(c.get());
        conns.push_back(std::move(c));
    }

    for (auto &w : workers)
        w->th = std::thread(worker_main, w.get());

    bench_window win;
    bench_run_window(&opts, &phase, &win);

    hist *total = static_cast<hist *>(malloc(sizeof(hist)));
    hist_init(total);
    uint64_t errors = 0;
    bool drained = true;
    for (auto &w : workers) {
        w->th.join();
        hist_merge(total, &w->h);
        errors += w->errors;
        drained = drained && w->drained;
    }
    bench_report(&opts, total, errors, &win);
    free(total);
    if (!drained) {
        // Calls still in flight: a CompletionQueue cannot be destroyed now.
        fprintf(stderr, "warning: server did not answer all calls after the run\n");
        _exit(0);
    }
    return 0;
}
