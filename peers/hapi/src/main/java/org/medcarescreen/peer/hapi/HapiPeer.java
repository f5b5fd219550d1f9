package org.medcarescreen.peer.hapi;

import ca.uhn.fhir.rest.server.RestfulServer;
import org.eclipse.jetty.ee10.servlet.ServletContextHandler;
import org.eclipse.jetty.ee10.servlet.ServletHolder;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.util.thread.QueuedThreadPool;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;

/**
 * Entry point: {@code java -jar hapi-peer.jar PORT}.
 *
 * <p>Starts the Spring context of {@link PeerConfig} (HAPI's JPA server over an in-memory
 * H2 database), then an embedded Jetty bound to 127.0.0.1 only, with HAPI's RestfulServer
 * servlet at /fhir/*. Plain Spring rather than Spring Boot: Boot's auto-configuration would
 * try to set up its own DataSource, JPA and Batch beans next to HAPI's, and costs start time.
 *
 * <p>When it prints "HAPI peer ready" the server answers; a client should still poll
 * GET /fhir/metadata for a 200. SIGTERM (or SIGINT) shuts Jetty and Spring down.
 */
public final class HapiPeer {

	private HapiPeer() {}

	public static void main(String[] args) throws Exception {
		long t0 = System.nanoTime();
		boolean train = args.length == 1 && args[0].equals("--train");
		if (!train && (args.length != 1 || !args[0].matches("\\d{1,5}"))) {
			System.err.println("usage: java -jar hapi-peer.jar PORT   (0 = any free port)");
			System.err.println("       java -jar hapi-peer.jar --train   (start, exercise, exit; see Training)");
			System.exit(2);
		}
		int port = train ? 0 : Integer.parseInt(args[0]);
		CorePackageCache.ensure(); // validation of uploaded profiles works offline

		AnnotationConfigApplicationContext spring = new AnnotationConfigApplicationContext(PeerConfig.class);
		RestfulServer restfulServer = spring.getBean(RestfulServer.class);

		// A small pool: the peer serves one test suite, not production traffic.
		Server jetty = new Server(new QueuedThreadPool(32, 4));
		ServerConnector connector = new ServerConnector(jetty);
		connector.setHost("127.0.0.1"); // loopback only
		connector.setPort(port);
		jetty.addConnector(connector);

		ServletContextHandler context = new ServletContextHandler();
		context.setContextPath("/");
		ServletHolder fhir = new ServletHolder("fhir", restfulServer);
		// Initialise the RestfulServer (provider scan, CapabilityStatement model) at start,
		// not on the first request, so "ready" really means ready.
		fhir.setInitOrder(1);
		context.addServlet(fhir, "/fhir/*");
		jetty.setHandler(context);
		jetty.setStopAtShutdown(false); // our own hook below stops Jetty, then Spring
		jetty.start();

		Runtime.getRuntime().addShutdownHook(new Thread(() -> {
			try {
				jetty.stop();
			} catch (Exception e) {
				System.err.println("jetty stop: " + e);
			}
			spring.close();
		}, "hapi-peer-shutdown"));

		double seconds = (System.nanoTime() - t0) / 1e9;
		System.out.printf("HAPI peer ready on http://127.0.0.1:%d/fhir (started in %.1f s)%n",
				connector.getLocalPort(), seconds);
		System.out.flush();
		if (train) {
			int status = 1;
			try {
				Training.exercise(connector.getLocalPort());
				status = 0;
			} finally {
				System.exit(status); // the shutdown hook stops the server; the JVM then writes its archive
			}
		}
		jetty.join();
	}
}
