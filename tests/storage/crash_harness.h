#pragma once
// Fork-and-kill crash testing: a child process loops writing through the storage layer
// and reports each write it saw acknowledged through a pipe; the parent SIGKILLs it at
// a random moment and returns what was acknowledged, so the test can check that the
// files hold every acknowledged write and nothing torn. A SIGKILL stops the process
// mid-syscall, the nearest a test gets to a crash without cutting the power.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace cohort::storage::testing {

// The child's end of the pipe: Ack(value) once a write has returned OK.
class Acknowledger {
 public:
  explicit Acknowledger(int fd) : fd_(fd) {}
  void Ack(std::uint64_t value) {
    if (::write(fd_, &value, sizeof value) != sizeof value) ::_exit(101);
  }

 private:
  int fd_;
};

struct CrashRun {
  std::vector<std::uint64_t> acknowledged;  // in the order the child sent them
  bool killed = false;                      // false: the child exited on its own
  int exit_code = 0;                        // when it did: its exit status
};

namespace internal {

// Reads 8-byte values from `fd` until `wanted` have arrived, end of file, or `deadline`.
inline void Collect(int fd, std::size_t wanted, std::chrono::steady_clock::time_point deadline,
                    std::vector<std::uint64_t>* values, std::string* pending) {
  while (values->size() < wanted) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return;
    char buffer[4096];
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) return;
    pending->append(buffer, static_cast<std::size_t>(n));
    while (pending->size() >= sizeof(std::uint64_t)) {
      std::uint64_t value;
      std::memcpy(&value, pending->data(), sizeof value);
      values->push_back(value);
      pending->erase(0, sizeof value);
    }
  }
}

}  // namespace internal

// Forks; the child runs `loop` (which should never return; if it does, its return value
// is the child's exit code). The parent waits for `min_acks` acknowledgements (at most
// 10 s), then `delay` more, kills the child with SIGKILL, and collects every value the
// child acknowledged before it died.
inline CrashRun RunUntilKilled(const std::function<int(Acknowledger&)>& loop,
                               std::size_t min_acks, std::chrono::microseconds delay) {
  CrashRun run;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return run;
  }
  const pid_t child = ::fork();
  if (child < 0) {
    ADD_FAILURE() << "fork: " << std::strerror(errno);
    return run;
  }
  if (child == 0) {
    ::close(fds[0]);
    Acknowledger acknowledger(fds[1]);
    ::_exit(loop(acknowledger));
  }
  ::close(fds[1]);
  std::string pending;
  internal::Collect(fds[0], min_acks, std::chrono::steady_clock::now() + std::chrono::seconds(10),
                    &run.acknowledged, &pending);
  std::this_thread::sleep_for(delay);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  run.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
  if (WIFEXITED(status)) run.exit_code = WEXITSTATUS(status);
  // What the child wrote to the pipe before it died is still there.
  internal::Collect(fds[0], SIZE_MAX, std::chrono::steady_clock::now() + std::chrono::seconds(5),
                    &run.acknowledged, &pending);
  ::close(fds[0]);
  return run;
}

}  // namespace cohort::storage::testing
