// grpc_echo_server.cc - gRPC C++ baseline: synchronous unary echo server,
// insecure credentials, listening on 127.0.0.1.
//
//   grpc_echo_server [-p PORT]     (PORT 0 = ephemeral, the default)
//
// Prints "PORT <n>" once listening; runs until SIGINT/SIGTERM.
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "echo.grpc.pb.h"

namespace {

class EchoServiceImpl final : public mprpcbench::EchoService::Service {
    grpc::Status Echo(grpc::ServerContext *, const mprpcbench::EchoRequest *req,
                      mprpcbench::EchoResponse *resp) override
    {
        resp->set_payload(req->payload());
        return grpc::Status::OK;
    }
};

}  // namespace

int main(int argc, char **argv)
{
    int port = 0, opt, bound = 0, sig = 0;
    while ((opt = getopt(argc, argv, "p:h")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-p PORT]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    if (port < 0 || port > 65535) {
        fprintf(stderr, "%s: bad port\n", argv[0]);
        return 2;
    }

    // Block the stop signals before gRPC starts its threads; main sigwaits.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);

    EchoServiceImpl service;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:" + std::to_string(port),
                             grpc::InsecureServerCredentials(), &bound);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    if (!server || bound == 0) {
        fprintf(stderr, "%s: cannot listen on 127.0.0.1:%d\n", argv[0], port);
        return 1;
    }
    printf("PORT %d\n", bound);
    fflush(stdout);

    sigwait(&stop, &sig);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    return 0;
}
