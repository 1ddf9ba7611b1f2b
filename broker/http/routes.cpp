// register_routes: the one list of route areas. See routes.hpp.
#include "broker/http/routes.hpp"

namespace mb::http {

void register_routes(HttpServer& http, broker::Broker& broker) {
  register_api_routes(http, broker);
#ifdef MB_HAVE_TASK_ROUTES
  register_task_routes(http, broker);
#endif
}

}  // namespace mb::http
