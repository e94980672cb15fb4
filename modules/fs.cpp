// The fs module's C++ part (luaio.fs; the public module is lib/fs.lua): files and directories on
// libuv's thread pool, so that every call parks only its task (see docs/fs.md).
//
//     int l_stat(lua_State* L) {
//         const char* path = check_path(L, 1, "stat");   // raises on a wrong type
//         luaio::check_can_wait(L, "stat");
//         Req* r = new Req("stat");
//         return submit(L, r, uv_fs_stat(luaio::loop(), &r->fs, path, on_req), push_stat);
//     }
//
// Two request kinds, both parked on the task that made the call:
//   Req   one libuv fs request (uv_fs_t): stat, open, read, write, rename ... Its callback pushes
//         the results (or the error table with the path) and resumes the task.
//   Work  a composite operation run as one uv_work_t in the thread pool with plain system calls
//         (readFile: open, fstat, read, close; writeFile with atomic; recursive mkdir and rm):
//         one hop to the pool instead of one per step.
// The objects: File (an open descriptor), Dir (a directory being iterated), Watch (a
// uv_fs_event). A forgotten File or Dir is closed by its proxy's __gc.
#include "runtime/luaio.h"
#include "runtime/strbuf.h"
#include "runtime/object.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

// The largest single read or write: bigger buffers are the caller's loop (a read of a whole
// file is readFile's work).
constexpr lua_Integer kMaxIo = lua_Integer(1) << 30;
constexpr size_t kDefaultRead = 64 * 1024;
// Events a watch keeps for a task that is not waiting in next(); older ones are dropped.
constexpr size_t kMaxWatchEvents = 1024;

mode_t g_umask = 022;

const char* check_path(lua_State* L, int idx, const char* fname) {
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING) luaio::raise_arg(L, idx, fname, "a path (a string)");
    const char* p = lua_tolstring(L, idx, &len);
    if (std::memchr(p, '\0', len))
        luaio::raise(L, fname, "the path in argument %d contains a NUL byte", luaio::user_arg(L, idx));
    return p;
}

void check_options(lua_State* L, int idx, const char* fname) {
    if (!lua_isnoneornil(L, idx) && !lua_istable(L, idx)) luaio::raise_arg(L, idx, fname, "an options table");
}

int check_mode(lua_State* L, int idx, const char* fname, int def) {
    if (lua_isnoneornil(L, idx)) return def;
    if (lua_type(L, idx) != LUA_TNUMBER) luaio::raise_arg(L, idx, fname, "a mode (a number)");
    lua_Integer m = lua_tointeger(L, idx);
    if (m < 0 || m > 07777) luaio::raise(L, fname, "mode must be between 0 and 0o7777");
    return static_cast<int>(m);
}

void push_error(lua_State* L, int err, const char* syscall, const char* path, const char* dest = nullptr) {
    luaio::push_uv_error(L, err);
    luaio::set_error_path(L, syscall, path, dest);
}

const char* type_name(uv_dirent_type_t t) {
    switch (t) {
    case UV_DIRENT_FILE:
        return "file";
    case UV_DIRENT_DIR:
        return "directory";
    case UV_DIRENT_LINK:
        return "link";
    case UV_DIRENT_FIFO:
        return "fifo";
    case UV_DIRENT_SOCKET:
        return "socket";
    case UV_DIRENT_CHAR:
        return "char";
    case UV_DIRENT_BLOCK:
        return "block";
    default:
        return "unknown";
    }
}

const char* mode_type(uint64_t mode) {
    switch (mode & S_IFMT) {
    case S_IFREG:
        return "file";
    case S_IFDIR:
        return "directory";
    case S_IFLNK:
        return "link";
    case S_IFIFO:
        return "fifo";
    case S_IFSOCK:
        return "socket";
    case S_IFCHR:
        return "char";
    case S_IFBLK:
        return "block";
    default:
        return "unknown";
    }
}

void set_number(lua_State* L, const char* k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

double seconds(uv_timespec_t t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

void push_stat_table(lua_State* L, const uv_stat_t& s) {
    lua_createtable(L, 0, 16);
    lua_pushstring(L, mode_type(s.st_mode));
    lua_setfield(L, -2, "type");
    set_number(L, "size", static_cast<double>(s.st_size));
    set_number(L, "mode", static_cast<double>(s.st_mode & 07777));
    set_number(L, "mtime", seconds(s.st_mtim));
    set_number(L, "atime", seconds(s.st_atim));
    set_number(L, "ctime", seconds(s.st_ctim));
    set_number(L, "birthtime", seconds(s.st_birthtim));
    set_number(L, "uid", static_cast<double>(s.st_uid));
    set_number(L, "gid", static_cast<double>(s.st_gid));
    set_number(L, "ino", static_cast<double>(s.st_ino));
    set_number(L, "dev", static_cast<double>(s.st_dev));
    set_number(L, "rdev", static_cast<double>(s.st_rdev));
    set_number(L, "nlink", static_cast<double>(s.st_nlink));
    set_number(L, "blksize", static_cast<double>(s.st_blksize));
    set_number(L, "blocks", static_cast<double>(s.st_blocks));
}

// Read buffers are StringBuffers (runtime/strbuf.h): not zero-filled first (std::string's resize
// writes every byte once more before the read does: a tenth of readFile's time on a 100 MB file),
// and a big one becomes its Lua string without a copy on the loop thread.
using luaio::StringBuffer;

// ---------------------------------------------------------------- File

struct Req;

// An open file. Its requests count in `inflight`; close() (or __gc) closes the descriptor once
// none is left, so no request ever uses a descriptor number that was closed and reused.
struct File : luaio::Handle<File> {
    static constexpr const char* kClass = "luaio.fs.file";
    static constexpr const char* kWhat = "file";
    uv_file fd;
    std::string path; // for error messages
    int inflight = 0;
    Req* closer = nullptr; // the close request waiting for the last request to end
    bool orphaned = false; // the proxy went while requests were in flight

    File(uv_file fd, const char* path) : fd(fd), path(path) {}
    // A forgotten file: its descriptor is closed at once (close(2) of a local file does not wait
    // for the disk), as Node's FileHandle does when it is collected.
    void proxy_gone() {
        if (inflight > 0) {
            orphaned = true;
            return;
        }
        ::close(fd);
        delete this;
    }
    void request_done();
};

// ---------------------------------------------------------------- Req: one uv_fs_t

using PushFn = int (*)(lua_State* co, Req* r);

struct Req {
    uv_fs_t fs{}; // zeroed: a write's continuation cleans it up before each request
    luaio::Waiter waiter;
    const char* syscall;
    PushFn push = nullptr;
    File* file = nullptr; // the file whose request this is (counted in its inflight)
    int keep = LUA_NOREF; // the Lua string a write reads from
    const char* data = nullptr;
    size_t len = 0, done = 0; // a write: its bytes, and how many are written
    int64_t offset = -1;
    StringBuffer buf; // a read's buffer

    explicit Req(const char* syscall, File* f = nullptr) : syscall(syscall), file(f) {
        if (f) f->inflight++;
    }
    ~Req() {
        uv_fs_req_cleanup(&fs);
        if (keep != LUA_NOREF)
            if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, keep);
    }
    const char* path() const { return file ? file->path.c_str() : fs.path; }
};

// Closes f's descriptor with the close request c, then frees f and wakes c's task.
void start_close(Req* c, File* f);

void File::request_done() {
    if (--inflight > 0) return;
    if (orphaned) {
        ::close(fd);
        delete this;
    } else if (closer) {
        Req* c = closer;
        closer = nullptr;
        start_close(c, this);
    }
}

// Pushes the results of a failed request (nil and the error table with its path) or calls push.
int push_result(lua_State* co, Req* r) {
    if (r->fs.result < 0) {
        lua_pushnil(co);
        push_error(co, static_cast<int>(r->fs.result), r->syscall, r->path(), r->fs.new_path);
        return 2;
    }
    return r->push(co, r);
}

void on_req(uv_fs_t* fs) {
    Req* r = reinterpret_cast<Req*>(fs);
    luaio::wake(r->waiter, [r](lua_State* co) { return push_result(co, r); });
    if (File* f = r->file) f->request_done();
    delete r;
}

// Parks the task on r once libuv took it (rc >= 0); else returns nil and the error at once.
int submit(lua_State* L, Req* r, int rc, PushFn push) {
    if (rc < 0) {
        r->fs.result = rc;
        int n = push_result(L, r);
        if (File* f = r->file) f->request_done();
        delete r;
        return n;
    }
    r->push = push;
    return luaio::park(L, r->waiter);
}

int push_true(lua_State* co, Req*) {
    lua_pushboolean(co, 1);
    return 1;
}
int push_stat(lua_State* co, Req* r) {
    push_stat_table(co, r->fs.statbuf);
    return 1;
}
int push_ptr_string(lua_State* co, Req* r) {
    lua_pushstring(co, static_cast<const char*>(r->fs.ptr));
    return 1;
}
int push_path(lua_State* co, Req* r) {
    lua_pushstring(co, r->fs.path); // mkdtemp: libuv filled in the template
    return 1;
}

// ---------------------------------------------------------------- Work: composite operations

struct Work {
    uv_work_t work;
    luaio::Waiter waiter;
    void (*run)(Work*) = nullptr; // in the thread pool: system calls only, no Lua
    std::string path;
    const char* data = nullptr; // writeFile's bytes (the Lua string anchored in keep)
    size_t len = 0;
    int keep = LUA_NOREF;
    int mode = 0666;
    bool flag1 = false, flag2 = false; // atomic | append; recursive, force
    int err = 0;                       // the result: 0, or a negative errno
    const char* syscall = nullptr;     // which call failed
    std::string err_path;              // the path it failed on (when not `path`)
    StringBuffer out;                  // readFile's bytes
    size_t out_len = 0;
    struct stat st {}; // lookup's
    std::string real;  // lookup's resolved path
    int fd = -1;       // lookup's open regular file (closed here unless a File took it)

    ~Work() {
        if (fd >= 0) ::close(fd);
        if (keep != LUA_NOREF)
            if (lua_State* L = luaio::main_state()) luaL_unref(L, LUA_REGISTRYINDEX, keep);
    }
    void fail(const char* call, const std::string* where = nullptr) {
        err = -errno;
        syscall = call;
        if (where) err_path = *where;
    }
};

int push_work(lua_State* co, Work* w) {
    if (w->err) {
        lua_pushnil(co);
        push_error(co, w->err, w->syscall, w->err_path.empty() ? w->path.c_str() : w->err_path.c_str());
        return 2;
    }
    lua_pushboolean(co, 1);
    return 1;
}

int push_work_data(lua_State* co, Work* w) {
    if (w->err) return push_work(co, w);
    if (!w->out.push(co, w->out_len)) return luaio::return_uv_error(co, UV_ENOMEM);
    return 1;
}

template <int (*Push)(lua_State*, Work*)> void after_work(uv_work_t* req, int status) {
    Work* w = reinterpret_cast<Work*>(req);
    if (status < 0 && !w->err) w->err = status;
    luaio::wake(w->waiter, [w](lua_State* co) {
        int n = Push(co, w);
        // A buffer that was copied goes before the task runs on (in the thread pool when big).
        w->out.reset();
        return n;
    });
    delete w;
}

template <int (*Push)(lua_State*, Work*) = push_work> int queue(lua_State* L, Work* w) {
    int rc = uv_queue_work(
        luaio::loop(), &w->work,
        [](uv_work_t* req) { reinterpret_cast<Work*>(req)->run(reinterpret_cast<Work*>(req)); }, after_work<Push>);
    if (rc < 0) {
        delete w;
        return luaio::return_uv_error(L, rc);
    }
    return luaio::park(L, w->waiter);
}

bool write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t k = ::write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

void run_read_file(Work* w) {
    int fd = ::open(w->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return w->fail("open");
    struct stat st;
    if (::fstat(fd, &st) < 0) {
        w->fail("fstat");
    } else if (S_ISDIR(st.st_mode)) {
        errno = EISDIR;
        w->fail("read");
    } else {
        // The size is a hint: a file that grows is read to its end, and files that report no
        // size (/proc, pipes) are read in growing blocks.
        size_t cap = st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : kDefaultRead;
        size_t n = 0;
        for (;;) {
            if (n == w->out.capacity() && !w->out.reserve(cap = std::max(cap, n * 2))) {
                errno = ENOMEM;
                w->fail("read");
                break;
            }
            ssize_t k = ::read(fd, w->out.data() + n, w->out.capacity() - n);
            if (k < 0) {
                if (errno == EINTR) continue;
                w->fail("read");
                break;
            }
            if (k == 0) break;
            n += static_cast<size_t>(k);
        }
        w->out_len = w->err ? 0 : n;
    }
    ::close(fd);
}

// lookup: realpath, then the resolved path opened (a regular file) and its fstat, or its stat:
// what a static file server needs for a request, in one trip to the thread pool instead of three.
// O_NONBLOCK: a FIFO put in the file's place does not block the pool thread in open.
void run_lookup(Work* w) {
    char* real = ::realpath(w->path.c_str(), nullptr);
    if (!real) return w->fail("realpath");
    w->real = real;
    std::free(real);
    int fd = ::open(w->real.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0 && ::fstat(fd, &w->st) == 0 && S_ISREG(w->st.st_mode)) {
        w->fd = fd;
        return;
    }
    if (fd >= 0) ::close(fd);
    if (::stat(w->real.c_str(), &w->st) < 0) return w->fail("stat", &w->real);
}

uv_timespec_t timespec_of(const struct timespec& t) {
    return {static_cast<long>(t.tv_sec), static_cast<long>(t.tv_nsec)};
}

int push_lookup(lua_State* co, Work* w) {
    if (w->err) return push_work(co, w);
    lua_pushlstring(co, w->real.data(), w->real.size());
    uv_stat_t u{};
    const struct stat& st = w->st;
    u.st_mode = st.st_mode;
    u.st_size = static_cast<uint64_t>(st.st_size);
    u.st_uid = st.st_uid;
    u.st_gid = st.st_gid;
    u.st_ino = st.st_ino;
    u.st_dev = st.st_dev;
    u.st_rdev = st.st_rdev;
    u.st_nlink = st.st_nlink;
    u.st_blksize = static_cast<uint64_t>(st.st_blksize);
    u.st_blocks = static_cast<uint64_t>(st.st_blocks);
    u.st_mtim = timespec_of(st.st_mtim);
    u.st_atim = timespec_of(st.st_atim);
    u.st_ctim = timespec_of(st.st_ctim);
    u.st_birthtim = u.st_ctim;
    push_stat_table(co, u);
    if (w->fd < 0) return 2;
    File* f = new File(w->fd, w->real.c_str());
    w->fd = -1;
    f->push_proxy(co);
    return 3;
}

// writeFile and appendFile; atomic: a temporary file beside the target, written, fsynced and
// renamed over it (and the directory fsynced), so a reader sees the old or the new content.
void run_write_file(Work* w) {
    mode_t mode = static_cast<mode_t>(w->mode) & ~g_umask;
    if (!w->flag1) {
        int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (w->flag2 ? O_APPEND : O_TRUNC);
        int fd = ::open(w->path.c_str(), flags, mode);
        if (fd < 0) return w->fail("open");
        if (!write_all(fd, w->data, w->len)) w->fail("write");
        if (::close(fd) < 0 && !w->err) w->fail("close");
        return;
    }
    std::string tmp = w->path + ".tmp-XXXXXX";
    int fd = ::mkostemp(&tmp[0], O_CLOEXEC);
    if (fd < 0) return w->fail("open", &tmp);
    if (::fchmod(fd, mode) < 0)
        w->fail("chmod", &tmp);
    else if (!write_all(fd, w->data, w->len))
        w->fail("write", &tmp);
    else if (::fsync(fd) < 0)
        w->fail("fsync", &tmp);
    if (::close(fd) < 0 && !w->err) w->fail("close", &tmp);
    if (!w->err && ::rename(tmp.c_str(), w->path.c_str()) < 0) w->fail("rename");
    if (w->err) {
        ::unlink(tmp.c_str());
        return;
    }
    std::string dir = w->path.substr(0, w->path.find_last_of('/') + 1);
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        ::fsync(dfd);
        ::close(dfd);
    }
}

// mkdir -p: every missing directory of the path is made; an existing directory is fine.
void run_mkdir_p(Work* w) {
    const std::string& p = w->path;
    for (size_t i = 1; i <= p.size(); i++) {
        if (i < p.size() && p[i] != '/') continue;
        std::string prefix = p.substr(0, i);
        if (::mkdir(prefix.c_str(), static_cast<mode_t>(w->mode)) == 0) continue;
        if (errno != EEXIST) return w->fail("mkdir", &prefix);
        struct stat st;
        if (::stat(prefix.c_str(), &st) < 0) return w->fail("stat", &prefix);
        if (!S_ISDIR(st.st_mode)) {
            errno = i == p.size() ? EEXIST : ENOTDIR;
            return w->fail("mkdir", &prefix);
        }
    }
}

// rm -r of `path` (a directory's entries first); symbolic links are removed, never followed.
bool remove_tree(Work* w, const std::string& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) < 0) return w->fail("lstat", &path), false;
    if (!S_ISDIR(st.st_mode)) {
        if (::unlink(path.c_str()) < 0) return w->fail("unlink", &path), false;
        return true;
    }
    DIR* d = ::opendir(path.c_str());
    if (!d) return w->fail("opendir", &path), false;
    bool ok = true;
    while (struct dirent* e = ::readdir(d)) {
        if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
        if (!(ok = remove_tree(w, path + "/" + e->d_name))) break;
    }
    ::closedir(d);
    if (ok && ::rmdir(path.c_str()) < 0) return w->fail("rmdir", &path), false;
    return ok;
}

void run_rm(Work* w) {
    struct stat st;
    if (::lstat(w->path.c_str(), &st) < 0) {
        if (errno == ENOENT && w->flag2) return;
        return w->fail("lstat");
    }
    if (S_ISDIR(st.st_mode) && !w->flag1) {
        errno = EISDIR;
        return w->fail("rm");
    }
    remove_tree(w, w->path);
}

// ---------------------------------------------------------------- path functions

int l_read_file(lua_State* L) {
    const char* path = check_path(L, 1, "readFile");
    // Node's readFile(path, "utf8") or {encoding = ...}: Lua strings are bytes, there is nothing to
    // choose, and an option silently ignored would hide a misspelling.
    if (!lua_isnoneornil(L, 2))
        luaio::raise(L, "readFile", "takes only a path (got a %s as argument 2): the content is returned as bytes",
                     luaL_typename(L, 2));
    luaio::check_can_wait(L, "readFile");
    Work* w = new Work;
    w->path = path;
    w->run = run_read_file;
    return queue<push_work_data>(L, w);
}

// lookup(path): realpath, stat table and, for a regular file, the file opened for reading (an
// fs.file whose stat the table is).
int l_lookup(lua_State* L) {
    const char* path = check_path(L, 1, "lookup");
    luaio::check_can_wait(L, "lookup");
    Work* w = new Work;
    w->path = path;
    w->run = run_lookup;
    return queue<push_lookup>(L, w);
}

// write_file(path, data, mode, atomic, append): lib/fs.lua reads the options.
int l_write_file(lua_State* L) {
    const char* fname = lua_toboolean(L, 5) ? "appendFile" : "writeFile";
    const char* path = check_path(L, 1, fname);
    if (lua_type(L, 2) != LUA_TSTRING)
        luaio::raise(L, fname, "expected data (a string) as argument 2, got %s", luaL_typename(L, 2));
    int mode = check_mode(L, 3, fname, 0666);
    luaio::check_can_wait(L, fname);
    Work* w = new Work;
    w->path = path;
    w->data = lua_tolstring(L, 2, &w->len);
    lua_pushvalue(L, 2);
    w->keep = luaL_ref(L, LUA_REGISTRYINDEX);
    w->mode = mode;
    w->flag1 = lua_toboolean(L, 4) && !lua_toboolean(L, 5);
    w->flag2 = lua_toboolean(L, 5);
    w->run = run_write_file;
    return queue(L, w);
}

int l_mkdir(lua_State* L) {
    const char* path = check_path(L, 1, "mkdir");
    check_options(L, 2, "mkdir");
    int mode = static_cast<int>(luaio::opt_int_field(L, 2, "mode", 0777, "mkdir"));
    bool recursive = luaio::opt_bool_field(L, 2, "recursive", false, "mkdir");
    luaio::check_can_wait(L, "mkdir");
    if (recursive) {
        Work* w = new Work;
        w->path = path;
        while (w->path.size() > 1 && w->path.back() == '/') w->path.pop_back();
        w->mode = mode;
        w->run = run_mkdir_p;
        return queue(L, w);
    }
    Req* r = new Req("mkdir");
    return submit(L, r, uv_fs_mkdir(luaio::loop(), &r->fs, path, mode, on_req), push_true);
}

int l_rm(lua_State* L) {
    const char* path = check_path(L, 1, "rm");
    check_options(L, 2, "rm");
    bool recursive = luaio::opt_bool_field(L, 2, "recursive", false, "rm");
    bool force = luaio::opt_bool_field(L, 2, "force", false, "rm");
    luaio::check_can_wait(L, "rm");
    Work* w = new Work;
    w->path = path;
    w->flag1 = recursive;
    w->flag2 = force;
    w->run = run_rm;
    return queue(L, w);
}

#define LUAIO_PATH_CALL(lname, fname, call, push)                                                                      \
    int lname(lua_State* L) {                                                                                          \
        const char* path = check_path(L, 1, fname);                                                                    \
        luaio::check_can_wait(L, fname);                                                                               \
        Req* r = new Req(fname);                                                                                       \
        return submit(L, r, call(luaio::loop(), &r->fs, path, on_req), push);                                          \
    }
LUAIO_PATH_CALL(l_stat, "stat", uv_fs_stat, push_stat)
LUAIO_PATH_CALL(l_lstat, "lstat", uv_fs_lstat, push_stat)
LUAIO_PATH_CALL(l_unlink, "unlink", uv_fs_unlink, push_true)
LUAIO_PATH_CALL(l_rmdir, "rmdir", uv_fs_rmdir, push_true)
LUAIO_PATH_CALL(l_readlink, "readlink", uv_fs_readlink, push_ptr_string)
LUAIO_PATH_CALL(l_realpath, "realpath", uv_fs_realpath, push_ptr_string)
#undef LUAIO_PATH_CALL

#define LUAIO_TWO_PATH_CALL(lname, fname, expr)                                                                        \
    int lname(lua_State* L) {                                                                                          \
        const char* path = check_path(L, 1, fname);                                                                    \
        const char* dest = check_path(L, 2, fname);                                                                    \
        luaio::check_can_wait(L, fname);                                                                               \
        Req* r = new Req(fname);                                                                                       \
        return submit(L, r, expr, push_true);                                                                          \
    }
LUAIO_TWO_PATH_CALL(l_rename, "rename", uv_fs_rename(luaio::loop(), &r->fs, path, dest, on_req))
LUAIO_TWO_PATH_CALL(l_link, "link", uv_fs_link(luaio::loop(), &r->fs, path, dest, on_req))
LUAIO_TWO_PATH_CALL(l_symlink, "symlink", uv_fs_symlink(luaio::loop(), &r->fs, path, dest, 0, on_req))
// copy_file(src, dest, exclusive): a copy-on-write clone where the file system offers it, else
// libuv's sendfile copy.
LUAIO_TWO_PATH_CALL(l_copy_file, "copyFile",
                    uv_fs_copyfile(luaio::loop(), &r->fs, path, dest,
                                   UV_FS_COPYFILE_FICLONE | (lua_toboolean(L, 3) ? UV_FS_COPYFILE_EXCL : 0), on_req))
#undef LUAIO_TWO_PATH_CALL

int l_chmod(lua_State* L) {
    const char* path = check_path(L, 1, "chmod");
    if (lua_isnoneornil(L, 2)) luaio::raise(L, "chmod", "expected a mode (a number) as argument 2, got nil");
    int mode = check_mode(L, 2, "chmod", 0);
    luaio::check_can_wait(L, "chmod");
    Req* r = new Req("chmod");
    return submit(L, r, uv_fs_chmod(luaio::loop(), &r->fs, path, mode, on_req), push_true);
}

int l_chown(lua_State* L) {
    const char* path = check_path(L, 1, "chown");
    lua_Integer uid = luaio::check_integer(L, 2, "chown"), gid = luaio::check_integer(L, 3, "chown");
    luaio::check_can_wait(L, "chown");
    Req* r = new Req("chown");
    return submit(
        L, r, uv_fs_chown(luaio::loop(), &r->fs, path, static_cast<uv_uid_t>(uid), static_cast<uv_gid_t>(gid), on_req),
        push_true);
}

int l_utime(lua_State* L) {
    const char* path = check_path(L, 1, "utime");
    double atime = luaio::check_number(L, 2, "utime"), mtime = luaio::check_number(L, 3, "utime");
    luaio::check_can_wait(L, "utime");
    Req* r = new Req("utime");
    return submit(L, r, uv_fs_utime(luaio::loop(), &r->fs, path, atime, mtime, on_req), push_true);
}

// access(path, mode): mode is a number (R_OK | W_OK | X_OK) or a string of "r", "w", "x".
int l_access(lua_State* L) {
    const char* path = check_path(L, 1, "access");
    int mode = F_OK;
    if (lua_type(L, 2) == LUA_TSTRING) {
        for (const char* c = lua_tostring(L, 2); *c; c++) {
            if (*c == 'r')
                mode |= R_OK;
            else if (*c == 'w')
                mode |= W_OK;
            else if (*c == 'x')
                mode |= X_OK;
            else
                luaio::raise(L, "access", "mode must be made of \"r\", \"w\" and \"x\"");
        }
    } else if (!lua_isnoneornil(L, 2)) {
        mode = static_cast<int>(luaio::check_integer(L, 2, "access"));
    }
    luaio::check_can_wait(L, "access");
    Req* r = new Req("access");
    return submit(L, r, uv_fs_access(luaio::loop(), &r->fs, path, mode, on_req), push_true);
}

int l_mkdtemp(lua_State* L) {
    const char* prefix = check_path(L, 1, "mkdtemp");
    luaio::check_can_wait(L, "mkdtemp");
    std::string tpl = std::string(prefix) + "XXXXXX";
    Req* r = new Req("mkdtemp");
    return submit(L, r, uv_fs_mkdtemp(luaio::loop(), &r->fs, tpl.c_str(), on_req), push_path);
}

// uv_fs_scandir_next frees the previous entry's name: the names are copied as they come.
int push_scandir(lua_State* co, Req* r) {
    std::vector<std::pair<std::string, uv_dirent_type_t>> entries;
    uv_dirent_t e;
    while (uv_fs_scandir_next(&r->fs, &e) != UV_EOF) entries.emplace_back(e.name, e.type);
    std::sort(entries.begin(), entries.end());
    lua_createtable(co, static_cast<int>(entries.size()), 0);
    int i = 0;
    for (const auto& d : entries) {
        lua_createtable(co, 0, 2);
        lua_pushlstring(co, d.first.data(), d.first.size());
        lua_setfield(co, -2, "name");
        lua_pushstring(co, type_name(d.second));
        lua_setfield(co, -2, "type");
        lua_rawseti(co, -2, ++i);
    }
    return 1;
}

int l_readdir(lua_State* L) {
    const char* path = check_path(L, 1, "readdir");
    luaio::check_can_wait(L, "readdir");
    Req* r = new Req("scandir");
    return submit(L, r, uv_fs_scandir(luaio::loop(), &r->fs, path, 0, on_req), push_scandir);
}

int l_tmpdir(lua_State* L) {
    char buf[4096];
    size_t len = sizeof buf;
    int rc = uv_os_tmpdir(buf, &len);
    if (rc < 0) return luaio::return_uv_error(L, rc);
    lua_pushlstring(L, buf, len);
    return 1;
}

// ---------------------------------------------------------------- file handles

int flags_of(lua_State* L, const char* s) {
    struct Flag {
        const char* name;
        int flags;
    };
    static const Flag kFlags[] = {
        {"r", O_RDONLY},
        {"r+", O_RDWR},
        {"w", O_WRONLY | O_CREAT | O_TRUNC},
        {"wx", O_WRONLY | O_CREAT | O_TRUNC | O_EXCL},
        {"w+", O_RDWR | O_CREAT | O_TRUNC},
        {"wx+", O_RDWR | O_CREAT | O_TRUNC | O_EXCL},
        {"a", O_WRONLY | O_CREAT | O_APPEND},
        {"ax", O_WRONLY | O_CREAT | O_APPEND | O_EXCL},
        {"a+", O_RDWR | O_CREAT | O_APPEND},
        {"ax+", O_RDWR | O_CREAT | O_APPEND | O_EXCL},
    };
    for (const Flag& f : kFlags)
        if (!std::strcmp(f.name, s)) return f.flags | O_CLOEXEC;
    luaio::raise(L, "open", "unknown flags \"%s\" (r, r+, w, wx, w+, wx+, a, ax, a+, ax+)", s);
}

int push_file(lua_State* co, Req* r) {
    File* f = new File(static_cast<uv_file>(r->fs.result), r->fs.path);
    f->push_proxy(co);
    return 1;
}

int l_open(lua_State* L) {
    const char* path = check_path(L, 1, "open");
    const char* flags = "r";
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TSTRING)
            luaio::raise(L, "open", "expected flags (a string) as argument 2, got %s", luaL_typename(L, 2));
        flags = lua_tostring(L, 2);
    }
    int fl = flags_of(L, flags);
    int mode = check_mode(L, 3, "open", 0666);
    luaio::check_can_wait(L, "open");
    Req* r = new Req("open");
    return submit(L, r, uv_fs_open(luaio::loop(), &r->fs, path, fl, mode, on_req), push_file);
}

int64_t opt_offset(lua_State* L, int idx, const char* fname) {
    if (lua_isnoneornil(L, idx)) return -1;
    if (lua_type(L, idx) != LUA_TNUMBER) luaio::raise_arg(L, idx, fname, "an offset (a number)");
    lua_Number o = lua_tonumber(L, idx);
    if (!(o >= 0) || o > 9e15) luaio::raise(L, fname, "offset must be a number >= 0");
    return static_cast<int64_t>(o);
}

int push_read(lua_State* co, Req* r) {
    if (r->fs.result == 0 && r->buf.capacity() > 0) {
        lua_pushnil(co);
        push_error(co, UV_EOF, "read", r->path());
        return 2;
    }
    if (!r->buf.push(co, static_cast<size_t>(r->fs.result))) return luaio::return_uv_error(co, UV_ENOMEM);
    return 1;
}

// f:read([n[, offset]]): up to n bytes (default 64 KiB) from the file's position or at offset.
int l_file_read(lua_State* L) {
    File* f = File::check(L, 1, "read");
    lua_Integer n = lua_isnoneornil(L, 2) ? static_cast<lua_Integer>(kDefaultRead) : luaio::check_integer(L, 2, "read");
    if (n < 0 || n > kMaxIo) luaio::raise(L, "read", "size must be between 0 and 2^30");
    int64_t offset = opt_offset(L, 3, "read");
    luaio::check_can_wait(L, "read");
    Req* r = new Req("read", f);
    if (!r->buf.reserve(static_cast<size_t>(n))) {
        delete r;
        f->request_done();
        return luaio::return_uv_error(L, UV_ENOMEM);
    }
    uv_buf_t b = uv_buf_init(r->buf.data(), static_cast<unsigned>(n));
    return submit(L, r, uv_fs_read(luaio::loop(), &r->fs, f->fd, &b, 1, offset, on_req), push_read);
}

void on_write(uv_fs_t* fs);

int start_write(Req* r) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(r->data + r->done), static_cast<unsigned>(r->len - r->done));
    int64_t off = r->offset < 0 ? -1 : r->offset + static_cast<int64_t>(r->done);
    uv_fs_req_cleanup(&r->fs);
    return uv_fs_write(luaio::loop(), &r->fs, r->file->fd, &b, 1, off, on_write);
}

// A write that the kernel took in part goes on with the rest, so f:write writes everything.
void on_write(uv_fs_t* fs) {
    Req* r = reinterpret_cast<Req*>(fs);
    if (fs->result > 0 && r->done + static_cast<size_t>(fs->result) < r->len) {
        r->done += static_cast<size_t>(fs->result);
        int rc = start_write(r);
        if (rc >= 0) return;
        fs->result = rc;
    }
    on_req(fs);
}

// f:write(data[, offset]): all of data at the file's position (the end in append mode) or at
// offset; true or nil, err.
int l_file_write(lua_State* L) {
    File* f = File::check(L, 1, "write");
    if (lua_type(L, 2) != LUA_TSTRING) luaio::raise_arg(L, 2, "write", "data (a string)");
    int64_t offset = opt_offset(L, 3, "write");
    size_t len;
    const char* data = lua_tolstring(L, 2, &len);
    if (len > static_cast<size_t>(kMaxIo)) luaio::raise(L, "write", "data must be at most 2^30 bytes");
    luaio::check_can_wait(L, "write");
    Req* r = new Req("write", f);
    r->data = data;
    r->len = len;
    lua_pushvalue(L, 2);
    r->keep = luaL_ref(L, LUA_REGISTRYINDEX);
    r->offset = offset;
    return submit(L, r, start_write(r), push_true);
}

int l_file_stat(lua_State* L) {
    File* f = File::check(L, 1, "stat");
    luaio::check_can_wait(L, "stat");
    Req* r = new Req("fstat", f);
    return submit(L, r, uv_fs_fstat(luaio::loop(), &r->fs, f->fd, on_req), push_stat);
}

int l_file_sync(lua_State* L) {
    File* f = File::check(L, 1, "sync");
    luaio::check_can_wait(L, "sync");
    Req* r = new Req("fsync", f);
    return submit(L, r, uv_fs_fsync(luaio::loop(), &r->fs, f->fd, on_req), push_true);
}

int l_file_truncate(lua_State* L) {
    File* f = File::check(L, 1, "truncate");
    int64_t n = opt_offset(L, 2, "truncate");
    luaio::check_can_wait(L, "truncate");
    Req* r = new Req("ftruncate", f);
    return submit(L, r, uv_fs_ftruncate(luaio::loop(), &r->fs, f->fd, n < 0 ? 0 : n, on_req), push_true);
}

// f:seek([whence[, offset]]): as Lua's file:seek ("set", "cur", "end"); returns the position.
// lseek only moves the descriptor's position (no I/O), so it runs at once.
int l_file_seek(lua_State* L) {
    File* f = File::check(L, 1, "seek");
    static const char* const kWhence[] = {"set", "cur", "end", nullptr};
    static const int kWhenceValues[] = {SEEK_SET, SEEK_CUR, SEEK_END};
    int w = 1;
    if (!lua_isnoneornil(L, 2)) {
        const char* name = luaio::check_string(L, 2, "seek");
        for (w = 0; kWhence[w] && std::strcmp(kWhence[w], name) != 0; w++) {
        }
        if (!kWhence[w]) luaio::raise(L, "seek", "whence must be \"set\", \"cur\" or \"end\", got '%s'", name);
    }
    int whence = kWhenceValues[w];
    lua_Integer off = lua_isnoneornil(L, 3) ? 0 : luaio::check_integer(L, 3, "seek");
    off_t pos = ::lseek(f->fd, static_cast<off_t>(off), whence);
    if (pos < 0) {
        lua_pushnil(L);
        push_error(L, -errno, "seek", f->path.c_str());
        return 2;
    }
    lua_pushnumber(L, static_cast<lua_Number>(pos));
    return 1;
}

void on_close(uv_fs_t* fs) {
    Req* r = reinterpret_cast<Req*>(fs);
    File* f = static_cast<File*>(fs->data);
    luaio::wake(r->waiter, [r, f](lua_State* co) {
        if (r->fs.result < 0) {
            lua_pushnil(co);
            push_error(co, static_cast<int>(r->fs.result), "close", f->path.c_str());
            return 2;
        }
        lua_pushboolean(co, 1);
        return 1;
    });
    delete f;
    delete r;
}

// uv_fs_close with a callback only fails for a null request.
void start_close(Req* c, File* f) {
    c->fs.data = f;
    uv_fs_close(luaio::loop(), &c->fs, f->fd, on_close);
}

// f:close(): true or nil, err; waits for the file's other requests first. Closing a closed
// file does nothing.
int l_file_close(lua_State* L) {
    File* f = File::check_or_closed(L, 1, "close");
    if (!f) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaio::check_can_wait(L, "close");
    f->detach_proxy();
    Req* c = new Req("close");
    if (f->inflight > 0)
        f->closer = c;
    else
        start_close(c, f);
    return luaio::park(L, c->waiter);
}

// discard(f): closes the file's descriptor at once (once the requests in flight are done), as
// its collection does, without a request: a cache dropping its entry (lib/http/static.lua).
int l_discard(lua_State* L) {
    if (File* f = File::check_or_closed(L, 1, "discard")) {
        f->detach_proxy();
        f->proxy_gone();
    }
    return 0;
}

int l_file_fd(lua_State* L) {
    lua_pushinteger(L, File::check(L, 1, "fd")->fd);
    return 1;
}

int l_file_tostring(lua_State* L) {
    File* f = File::check_or_closed(L, 1, "__tostring");
    lua_pushfstring(L, f ? "fs.file (%s)" : "fs.file (closed)", f ? f->path.c_str() : "");
    return 1;
}

// ---------------------------------------------------------------- Dir: iterating a directory

constexpr size_t kDirBatch = 64;

struct Dir : luaio::Handle<Dir> {
    static constexpr const char* kClass = "luaio.fs.dir";
    static constexpr const char* kWhat = "directory";
    uv_dir_t* dir;
    std::string path;
    uv_dirent_t entries[kDirBatch];
    bool busy = false;

    Dir(uv_dir_t* d, const char* p) : dir(d), path(p) {
        dir->dirents = entries;
        dir->nentries = kDirBatch;
    }
    void close_now() {
        uv_fs_t req;
        uv_fs_closedir(nullptr, &req, dir, nullptr); // no I/O: closedir(3) frees and closes
        uv_fs_req_cleanup(&req);
    }
    void proxy_gone() {
        if (busy) return; // the read's callback closes it
        close_now();
        delete this;
    }
};

int push_dir(lua_State* co, Req* r) {
    Dir* d = new Dir(static_cast<uv_dir_t*>(r->fs.ptr), r->fs.path);
    d->push_proxy(co);
    return 1;
}

int l_opendir(lua_State* L) {
    const char* path = check_path(L, 1, "opendir");
    luaio::check_can_wait(L, "opendir");
    Req* r = new Req("opendir");
    return submit(L, r, uv_fs_opendir(luaio::loop(), &r->fs, path, on_req), push_dir);
}

int push_dir_read(lua_State* co, Req* r, Dir* d) {
    if (r->fs.result < 0) {
        lua_pushnil(co);
        push_error(co, static_cast<int>(r->fs.result), "readdir", d->path.c_str());
        return 2;
    }
    if (r->fs.result == 0) return 0;
    lua_createtable(co, static_cast<int>(r->fs.result), 0);
    for (int i = 0; i < r->fs.result; i++) {
        lua_createtable(co, 0, 2);
        lua_pushstring(co, d->entries[i].name);
        lua_setfield(co, -2, "name");
        lua_pushstring(co, type_name(d->entries[i].type));
        lua_setfield(co, -2, "type");
        lua_rawseti(co, -2, i + 1);
    }
    return 1;
}

// The entries are pushed and the request cleaned up before the task resumes: it may read the
// directory again or close it (which frees it) before wake returns.
void on_dir_read(uv_fs_t* fs) {
    Req* r = reinterpret_cast<Req*>(fs);
    Dir* d = static_cast<Dir*>(fs->data);
    bool woken = luaio::wake(r->waiter, [r, d](lua_State* co) {
        int n = push_dir_read(co, r, d);
        uv_fs_req_cleanup(&r->fs);
        d->busy = false;
        return n;
    });
    delete r;
    if (!woken) {
        d->busy = false;
        if (!d->has_proxy()) d->proxy_gone();
    }
}

// dir:read(): an array of up to 64 {name, type}, or nil at the end.
int l_dir_read(lua_State* L) {
    Dir* d = Dir::check(L, 1, "read");
    if (d->busy) luaio::raise(L, "read", "the directory is being read by another task");
    luaio::check_can_wait(L, "read");
    Req* r = new Req("readdir");
    r->fs.data = d;
    d->busy = true;
    int rc = uv_fs_readdir(luaio::loop(), &r->fs, d->dir, on_dir_read);
    if (rc < 0) {
        d->busy = false;
        delete r;
        return luaio::return_uv_error(L, rc);
    }
    return luaio::park(L, r->waiter);
}

int l_dir_close(lua_State* L) {
    if (Dir* d = Dir::check_or_closed(L, 1, "close")) {
        d->detach_proxy();
        d->proxy_gone();
    }
    return 0;
}

// ---------------------------------------------------------------- Watch: uv_fs_event

struct Watch : luaio::Handle<Watch> {
    static constexpr const char* kClass = "luaio.fs.watch";
    static constexpr const char* kWhat = "watch";
    uv_fs_event_t handle;
    luaio::Waiter waiter;
    struct Event {
        std::string name;
        int events;
    };
    std::deque<Event> queued;
    size_t dropped = 0;

    // A task waiting in next() gets nil. A collected watch has no waiter (a parked task keeps
    // the watch on its stack) but for the one the closing state drops: that one is not woken.
    void close(bool wake_waiter = true) {
        detach_proxy();
        if (wake_waiter) luaio::wake(waiter, [](lua_State*) { return 0; });
        uv_close(reinterpret_cast<uv_handle_t*>(&handle), [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
    }
    void proxy_gone() { close(false); }
};

void push_event(lua_State* co, const std::string& name, int events) {
    lua_createtable(co, 0, 3);
    lua_pushlstring(co, name.data(), name.size());
    lua_setfield(co, -2, "filename");
    lua_pushboolean(co, (events & UV_RENAME) != 0);
    lua_setfield(co, -2, "rename");
    lua_pushboolean(co, (events & UV_CHANGE) != 0);
    lua_setfield(co, -2, "change");
}

void on_watch(uv_fs_event_t* h, const char* filename, int events, int status) {
    auto* w = static_cast<Watch*>(h->data);
    std::string name = filename ? filename : "";
    if (status < 0) {
        luaio::wake_uv_error(w->waiter, status);
        return;
    }
    if (luaio::wake(w->waiter, [&](lua_State* co) {
            push_event(co, name, events);
            return 1;
        }))
        return;
    if (w->queued.size() == kMaxWatchEvents) {
        w->queued.pop_front();
        w->dropped++;
    }
    w->queued.push_back({std::move(name), events});
}

int l_watch(lua_State* L) {
    const char* path = check_path(L, 1, "watch");
    auto* w = new Watch;
    uv_fs_event_init(luaio::loop(), &w->handle);
    w->handle.data = w;
    int rc = uv_fs_event_start(&w->handle, on_watch, path, 0);
    if (rc < 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(&w->handle),
                 [](uv_handle_t* h) { delete static_cast<Watch*>(h->data); });
        lua_pushnil(L);
        push_error(L, rc, "watch", path);
        return 2;
    }
    w->push_proxy(L);
    return 1;
}

// w:next(): the next change {filename, rename, change}, parking until there is one; nil once
// the watch is closed.
int l_watch_next(lua_State* L) {
    Watch* w = Watch::check_or_closed(L, 1, "next");
    if (!w) return 0;
    if (!w->queued.empty()) {
        push_event(L, w->queued.front().name, w->queued.front().events);
        w->queued.pop_front();
        return 1;
    }
    if (w->waiter.waiting()) {
        lua_pushnil(L);
        luaio::push_uv_error(L, UV_EBUSY);
        return 2;
    }
    luaio::check_can_wait(L, "next");
    return luaio::park(L, w->waiter);
}

int l_watch_close(lua_State* L) {
    if (Watch* w = Watch::check_or_closed(L, 1, "close")) w->close();
    return 0;
}

// w:unref(): the watch no longer keeps the process alive (a cache's watch, as http.static's).
int l_watch_unref(lua_State* L) {
    if (Watch* w = Watch::check_or_closed(L, 1, "unref")) uv_unref(reinterpret_cast<uv_handle_t*>(&w->handle));
    return 0;
}

} // namespace

extern "C" int luaopen_luaio_fs(lua_State* L) {
    g_umask = ::umask(0);
    ::umask(g_umask);
    const luaL_Reg file_methods[] = {
        {"read", l_file_read},         {"write", l_file_write},         {"stat", l_file_stat},   {"sync", l_file_sync},
        {"truncate", l_file_truncate}, {"seek", l_file_seek},           {"close", l_file_close}, {"fd", l_file_fd},
        {"__gc", File::l_gc},          {"__tostring", l_file_tostring}, {nullptr, nullptr}};
    luaio::new_class(L, File::kClass, file_methods);
    lua_pop(L, 1);
    const luaL_Reg dir_methods[] = {
        {"read", l_dir_read}, {"close", l_dir_close}, {"__gc", Dir::l_gc}, {nullptr, nullptr}};
    luaio::new_class(L, Dir::kClass, dir_methods);
    lua_pop(L, 1);
    const luaL_Reg watch_methods[] = {{"next", l_watch_next},
                                      {"close", l_watch_close},
                                      {"unref", l_watch_unref},
                                      {"__gc", Watch::l_gc},
                                      {nullptr, nullptr}};
    luaio::new_class(L, Watch::kClass, watch_methods);
    lua_pop(L, 1);
    const luaL_Reg funcs[] = {{"readFile", l_read_file},  {"write_file", l_write_file},
                              {"open", l_open},           {"stat", l_stat},
                              {"lstat", l_lstat},         {"access", l_access},
                              {"readdir", l_readdir},     {"opendir", l_opendir},
                              {"mkdir", l_mkdir},         {"rm", l_rm},
                              {"rmdir", l_rmdir},         {"rename", l_rename},
                              {"unlink", l_unlink},       {"link", l_link},
                              {"copy_file", l_copy_file}, {"symlink", l_symlink},
                              {"readlink", l_readlink},   {"realpath", l_realpath},
                              {"chmod", l_chmod},         {"chown", l_chown},
                              {"utime", l_utime},         {"mkdtemp", l_mkdtemp},
                              {"tmpdir", l_tmpdir},       {"watch", l_watch},
                              {"lookup", l_lookup},       {"discard", l_discard},
                              {nullptr, nullptr}};
    luaL_newlib(L, funcs);
    return 1;
}
