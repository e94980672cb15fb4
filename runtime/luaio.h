// The luaio runtime: the one Lua state, the one libuv loop, the one scheduler.
//
// Every module binding includes this header and nothing else from runtime/ (streams
// have their own header, runtime/stream.h). The calling convention of a waiting call:
//
//     int l_sleep(lua_State* L) {
//         luaio::check_can_wait(L, "sleep");        // raises outside a task
//         auto* req = ...;                          // C++ object that owns the uv handle
//         luaio::start_timer(&req->timer, on_timer, ms); // a deadline from now
//         return luaio::park(L, req->waiter);      // tail position: yields the task
//     }
//     void on_timer(uv_timer_t* t) {
//         auto* req = ...;
//         luaio::wake(req->waiter, [](lua_State* co) { lua_pushboolean(co, 1); return 1; });
//     }
//
// The values pushed by the wake function become the results of the waiting call. A
// waiter is woken at most once: wake() clears it before resuming, so a late callback
// (after a timeout or a close) finds it empty and does nothing.
#pragma once

#include <lua.hpp>
#include <uv.h>

#include <cstddef>

#include "runtime/errors.h"

namespace luaio {

uv_loop_t* loop();
lua_State* main_state();

// ---------------------------------------------------------------- deadlines
// Every deadline (timeouts of streams, connects, DNS queries, the http server's waits, sleep and
// timers) is measured from the real time the operation starts. libuv's loop time (uv_now) is
// read once per loop iteration, so after CPU work in a task it lags, and a timer started
// against it would fire early by as much. These two bring the loop time up to date first
// (uv_update_time: one vDSO clock read).
//
// The loop time in milliseconds, brought up to date: the base of an absolute deadline.
uint64_t now_ms();
// uv_timer_start measured from now (see now_ms).
int start_timer(uv_timer_t* t, uv_timer_cb cb, uint64_t timeout, uint64_t repeat = 0);

// ---------------------------------------------------------------- errors
// The seed's error table {code, name, message}; names, codes and default messages come from the
// one table in runtime/errors.h (libuv's codes, c-ares's, luaio's own LUAIO_E...). Every error
// table has the shared metatable whose __tostring gives "ECONNREFUSED: connection refused
// (127.0.0.1:8080)". Lua code makes the same tables with require("luaio.errors").new(name,
// message, fields). Error tables are made only on failure paths.
//
// The error table of `code` with the table's name and `message` (default: the table's).
void push_error(lua_State* L, int code, const char* message = nullptr);
// With an explicit name (a library's code outside the table).
void push_error(lua_State* L, int code, const char* name, const char* message);
// The error table of a libuv error code (UV_ECONNREFUSED ...), with libuv's name and message.
void push_uv_error(lua_State* L, int uverr);
// Push `nils` nils then the error table of a libuv error; returns nils + 1 for `return`.
int return_uv_error(lua_State* L, int uverr, int nils = 1);
// Sets the fields `address` (when not null) and `port` (when >= 0) of the error table on top of
// L: what a network error concerns (printed by __tostring). A host name goes in `host`.
void set_error_address(lua_State* L, const char* address, int port = -1);
// Sets the fields `syscall`, `path` and `dest` (those not null) of the error table on top of L:
// what a file system error concerns, printed by __tostring as "ENOENT: no such file or
// directory, open '/x'" (and " -> '/y'" for a dest).
void set_error_path(lua_State* L, const char* syscall, const char* path, const char* dest = nullptr);

// Raise "<where><fname>: <message>" as a Lua error (programmer mistakes: wrong types, closed
// objects). fname is the public name ("process.wait", "read"). <where> is the user's line: the
// innermost Lua function on the stack that is not luaio's own lib/ code, so a binding reached
// through a lib/ wrapper (tcp.createServer -> luaio.tcp listen) still points at the caller.
[[noreturn]] void raise(lua_State* L, const char* fname, const char* fmt, ...);
// Pushes that "<chunk>:<line>: " (what raise prefixes).
void push_user_where(lua_State* L);
// Raises "<fname>: expected <what> as argument N, got <type>" for the argument at idx of the
// running C function, numbered as the user wrote the call: in obj:f(x), x is argument 1 and obj is
// "self" (the function was called as a method: Lua's debug info says so; a tail call cannot tell
// and keeps idx). `got` replaces the type name ("a fraction"). Every "as argument N" message goes
// through it.
[[noreturn]] void raise_arg(lua_State* L, int idx, const char* fname, const char* what, const char* got = nullptr);
// The number the user gives the argument at idx: idx - 1 in a call obj:f(...) (0 for obj), else idx.
int user_arg(lua_State* L, int idx);
// Argument checks that raise "<fname>: expected a number as argument 2, got string" (use them
// instead of luaL_check*, whose message names the function '?' when it is called as a local).
// check_string accepts a number, as Lua does, and returns its text.
lua_Number check_number(lua_State* L, int idx, const char* fname);
lua_Integer check_integer(lua_State* L, int idx, const char* fname);
const char* check_string(lua_State* L, int idx, const char* fname, size_t* len = nullptr);
// Raises "<fname>: unknown option 'x'" for a key of the options table at `idx` that is not in
// `known` (a nullptr-terminated list), so that a misspelled option is not silently ignored.
void check_option_names(lua_State* L, int idx, const char* const* known, const char* fname);
// Check an optional integer field of an options table at `idx` (absent or nil -> def).
lua_Integer opt_int_field(lua_State* L, int idx, const char* field, lua_Integer def, const char* fname);
bool opt_bool_field(lua_State* L, int idx, const char* field, bool def, const char* fname);
// Returns nullptr when absent.
const char* opt_string_field(lua_State* L, int idx, const char* field, const char* fname, size_t* len = nullptr);

// ---------------------------------------------------------------- userdata
// Every proxy userdata is a pointer to a C++ object; `name` is the metatable name
// (luaio.<module>.<type>). check_object raises "<fname>: expected <name>" on a wrong self.
void* check_object(lua_State* L, int idx, const char* name, const char* fname);
// The address of the metatable of the userdata at idx: nullptr when the value is no full
// userdata or has none; *payload (if given) gets its block. The one way luaio reads an object's
// class (Handle<T>::check, Stream::test_proxy, test_object).
const void* userdata_metatable(lua_State* L, int idx, void** payload = nullptr);
// luaL_testudata without its registry lookup: the userdata at idx if its metatable is `name`'s
// (created by new_class or luaL_newmetatable), else nullptr. Cheap enough for every method call.
void* test_object(lua_State* L, int idx, const char* name);
// Ends the closing value of a task (see spawn) of a class: ud is the userdata's block, failed
// tells whether the task failed. Must not raise.
using Closer = void (*)(lua_State* L, void* ud, bool failed);
// Registers the closer of the class `name` (a C++ object's proxies): a task's closing value of
// that class is then ended by a direct call, without looking up and pcalling __close.
void set_closer(lua_State* L, const char* name, Closer closer);
// Pushes a new proxy of obj: a userdata holding the pointer, with the metatable `cls`. Returns
// the pointer's slot, which the owner keeps and clears when obj goes (check_object then raises).
// C++ objects use it through runtime/object.h (Handle<T>), the one owner model.
void** push_proxy(lua_State* L, void* obj, const char* cls);
// Creates the metatable `name` of a class and adds `methods` (add_to_class); leaves it on the
// stack. Its __index is a table of its own, so that no metamethod can be called as a method
// (`sock.__gc(server)`); every metamethod still checks its argument, as getmetatable reaches it.
void new_class(lua_State* L, const char* name, const luaL_Reg* methods);
// Adds functions to the class whose metatable is on top of L: names that start with "__" are
// metamethods and go to the metatable, the others to its __index table.
void add_to_class(lua_State* L, const luaL_Reg* functions);

// ---------------------------------------------------------------- scheduler
// A parked task: `ref` anchors the task's root coroutine in the registry (4 bytes: every idle
// connection holds a waiter).
struct Waiter {
    int ref = LUA_NOREF;
    bool waiting() const { return ref != LUA_NOREF; }
};

// Raise a clear error unless the running code is inside a task and can wait.
void check_can_wait(lua_State* L, const char* fname);
// Park the running task in `w` and yield it. Use as `return luaio::park(L, w);`.
int park(lua_State* L, Waiter& w);

// Resume the task parked in `w`: detaches it (w becomes empty), calls push(co) which pushes
// the results onto the task's stack and returns their count, then resumes the task. Returns
// false (and calls nothing) if nothing was parked. From a libuv callback the task runs at once;
// from running Lua code it is queued and runs after the current task yields.
struct Parked {
    lua_State* task;
    int ref;
};
// The parked task's coroutine (nullptr when nothing is parked or the state is closed).
lua_State* task_of(const Waiter& w);
Parked detach(Waiter& w);
void resume_parked(Parked p, int nargs);
template <class Push> bool wake(Waiter& w, Push&& push) {
    if (!w.waiting()) return false;
    Parked p = detach(w);
    if (!p.task) return false;
    int n = push(p.task);
    resume_parked(p, n);
    return true;
}
// Ends the process with `code` (process.exit) the way a script that has nothing left to do ends,
// so that finalizers run and LeakSanitizer finds nothing: stdio is flushed, the calling task is
// parked for good, no other task runs, the loop stops, and main closes the state and returns
// `code`. Where the caller cannot yield (outside a task, a __gc, a C callback) it calls exit()
// at once. Use as `return luaio::exit_process(L, code);`.
int exit_process(lua_State* L, int code);
// Wake with the seed's error table of a libuv error, after `nils` nils.
bool wake_uv_error(Waiter& w, int uverr, int nils = 1);

// Start a new task: the function and its nargs arguments on top of L are popped and the task
// is queued to run. Errors in the task are reported (traceback to stderr); the loop goes on.
// With close_idx, the value at that index (typically one of the arguments, e.g. a connection's
// socket) is closed when the task ends, whether it returns or fails: its __close metamethod is
// called with (value, error or nil), like a Lua 5.4 <close> variable; a class with a closer
// (set_closer) has that called instead. This costs no stack frame in the task (a Lua wrapper
// with pcall would grow every coroutine's stack).
void spawn(lua_State* L, int nargs, int close_idx = 0);

// True while Lua code of some task is running (so a resume must be queued, not nested).
bool in_task();

// Print "luaio: <prefix><msg>" to stderr: the one place that reports luaio's own messages (a
// failed task, a handler error, a supervisor's restart). level is "error", "warn" or "info"
// (shown by the log module's sink; stderr shows only the message).
void report_error(lua_State* L, const char* prefix, const char* msg, const char* level = "error");
// Sends report_error's messages to hook instead of stderr (the log module's sink, so that they
// come out in the user's log format and destination); nullptr restores stderr.
using ReportHook = void (*)(const char* level, const char* prefix, const char* msg);
void set_report_hook(ReportHook hook);

// Registers a function that writes out what a module keeps buffered (the log module's queue)
// when the process ends: at exit (also os.exit and process.exit) and when a signal's default
// action ends it (SIGTERM, SIGINT, SIGHUP ... with no handler). It may run in a signal handler,
// on any thread: it must not allocate, and should write with plain write(2). At most 8.
using FlushHook = void (*)();
void add_flush_hook(FlushHook hook);

// ---------------------------------------------------------------- modules
// Register a C++ module so that `require(name)` loads it.
void preload(lua_State* L, const char* name, lua_CFunction open);

} // namespace luaio
