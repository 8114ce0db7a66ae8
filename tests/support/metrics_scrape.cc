#include "tests/support/metrics_scrape.h"

#include "boost/asio/connect.hpp"
#include "boost/asio/ip/tcp.hpp"
#include "boost/asio/write.hpp"

namespace veil::testing {

std::string HttpGet(const std::string& host_port, const std::string& path) {
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) return "";
  boost::system::error_code ec;
  socket.connect({boost::asio::ip::make_address(host_port.substr(0, colon), ec),
                  static_cast<uint16_t>(std::stoi(host_port.substr(colon + 1)))},
                 ec);
  if (ec) return "";
  std::string request = "GET " + path + " HTTP/1.0\r\nHost: veil\r\n\r\n";
  boost::asio::write(socket, boost::asio::buffer(request), ec);
  std::string response;
  char buf[4096];
  for (;;) {
    size_t n = socket.read_some(boost::asio::buffer(buf), ec);
    response.append(buf, n);
    if (ec) break;
  }
  return response;
}

double Sample(const std::string& metrics, const std::string& series) {
  size_t at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(metrics.substr(at + series.size() + 2));
}

std::string MetricsAddress(const VeildProcess& process) {
  std::string log = process.log();
  size_t at = log.find("metrics=");
  if (at == std::string::npos) return "";
  size_t end = log.find_first_of(" \n", at);
  return log.substr(at + 8, end - at - 8);
}

double Scrape(const VeildProcess& process, const std::string& series) {
  return Sample(HttpGet(MetricsAddress(process), "/metrics"), series);
}

}  // namespace veil::testing
