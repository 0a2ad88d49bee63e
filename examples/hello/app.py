"""The hello app: a page, a JSON API with a path parameter, and a function route."""

from brubeck import Brubeck, JSONMessageHandler, Mongrel2Connection, WebMessageHandler, render


class DemoHandler(WebMessageHandler):
    def get(self):
        self.set_body("Take five")
        return self.render()


class UserHandler(JSONMessageHandler):
    async def get(self, user_id):  # named group -> keyword argument
        self.add_to_payload("user", user_id)
        return self.render()


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/brubeck$", DemoHandler), (r"^/user/(?P<user_id>\d+)$", UserHandler)],
)


@app.add_route(r"^/deco/(?P<name>\w+)$", method=["GET", "POST"])
def deco(application, message, name):
    return render(f"hi {name}", 200, "OK", {})


if __name__ == "__main__":
    app.run()
