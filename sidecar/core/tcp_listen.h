// Opening a TCP listener the one way every listener of this node does (node listeners, portal
// inlets): open, SO_REUSEADDR (a restart binds the port its predecessor's connections still
// hold in TIME_WAIT), bind, listen with the system's backlog.
//
// Thread-safety: a function of its arguments.
#ifndef VEIL_SIDECAR_CORE_TCP_LISTEN_H_
#define VEIL_SIDECAR_CORE_TCP_LISTEN_H_

#include "boost/asio/ip/tcp.hpp"

namespace veil::core {

// Opens, binds and listens `acceptor` on `endpoint`; the first error, or none.
inline boost::system::error_code OpenTcpListener(boost::asio::ip::tcp::acceptor& acceptor,
                                                 const boost::asio::ip::tcp::endpoint& endpoint) {
  boost::system::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(boost::asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(boost::asio::socket_base::max_listen_connections, ec);
  return ec;
}

}  // namespace veil::core

#endif  // VEIL_SIDECAR_CORE_TCP_LISTEN_H_
