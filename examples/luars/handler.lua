function handle_request(method, path, body)
    if path == "/" then
        return 200, "text/plain", "Hello from luars!"

    elseif path == "/time" then
        return 200, "text/plain", os.date("%Y-%m-%d %H:%M:%S")

    elseif path == "/echo" and method == "POST" then
        return 200, "text/plain", body

    elseif path == "/sleep" then
        sleep(1)
        return 200, "text/plain", "Slept for 1 second"

    elseif path == "/fetch" then
        local data = http_get("http://httpbin.org/get")
        return 200, "application/json", data

    else
        return 404, "text/plain", "Not Found"
    end
end
