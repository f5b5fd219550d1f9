package org.medcarescreen.peer.hapi;

import com.sun.net.httpserver.HttpServer;

import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * The training run behind the start-up cache ({@code ./build} runs
 * {@code java -XX:ArchiveClassesAtExit=... -jar hapi-peer.jar --train}).
 *
 * <p>Most of the peer's start time is loading and linking some 30,000 classes. A class-data-
 * sharing archive written at the end of one run lets later runs map them in instead. The
 * archive holds the classes that were loaded during the run, so besides starting, the training
 * run goes once through the kinds of request the tests make: metadata, a validated create, a
 * search, a transaction, a rejected write, a rest-hook Subscription delivery. Then the JVM
 * exits and the archive is written.
 */
final class Training {

	private Training() {}

	static void exercise(int port) throws Exception {
		String base = "http://127.0.0.1:" + port + "/fhir";
		HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
		call(http, "GET", base + "/metadata", null);
		call(http, "PUT", base + "/Patient/train-1", """
				{"resourceType":"Patient","id":"train-1","name":[{"family":"Train"}],
				 "extension":[{"url":"https://medcare-screen.org/fhir/StructureDefinition/x","valueString":"y"}]}""");
		call(http, "POST", base + "/Observation", """
				{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/train-1"},
				 "code":{"coding":[{"system":"http://loinc.org","code":"2986-8"}]}}""");
		call(http, "GET", base + "/Observation?patient=Patient/train-1&code=http://loinc.org%7C2986-8&_count=1", null);
		call(http, "GET", base + "/Patient?_has:Condition:patient:code=http://snomed.info/sct%7C1", null);
		call(http, "POST", base, """
				{"resourceType":"Bundle","type":"transaction","entry":[
				 {"fullUrl":"urn:uuid:6c1d8d34-0a5e-4c36-8f0e-3f5b1f0b1a01",
				  "resource":{"resourceType":"Patient","identifier":[{"system":"urn:train","value":"1"}]},
				  "request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=urn:train|1"}},
				 {"fullUrl":"urn:uuid:6c1d8d34-0a5e-4c36-8f0e-3f5b1f0b1a02",
				  "resource":{"resourceType":"Observation","status":"final",
				   "code":{"coding":[{"system":"http://loinc.org","code":"14913-8"}]},
				   "subject":{"reference":"urn:uuid:6c1d8d34-0a5e-4c36-8f0e-3f5b1f0b1a01"}},
				  "request":{"method":"POST","url":"Observation"}}]}""");
		call(http, "POST", base + "/ResearchSubject", """
				{"resourceType":"ResearchSubject","status":"bogus",
				 "study":{"reference":"ResearchStudy/none"},"individual":{"reference":"Patient/train-1"}}""");
		subscription(http, base);
	}

	/** A rest-hook Subscription to a loopback receiver, one delivery, then the delete. */
	private static void subscription(HttpClient http, String base) throws Exception {
		CountDownLatch delivered = new CountDownLatch(1);
		HttpServer receiver = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
		receiver.createContext("/", exchange -> {
			exchange.getRequestBody().readAllBytes();
			exchange.sendResponseHeaders(200, -1);
			exchange.close();
			delivered.countDown();
		});
		receiver.start();
		try {
			call(http, "PUT", base + "/Subscription/train-1", """
					{"resourceType":"Subscription","id":"train-1","status":"requested","reason":"training",
					 "criteria":"Observation?code=http://loinc.org|2986-8",
					 "channel":{"type":"rest-hook","endpoint":"http://127.0.0.1:%d/hook",
					  "payload":"application/fhir+json","header":["Authorization: Bearer train"]}}""".formatted(
					receiver.getAddress().getPort()));
			for (int i = 0; i < 50 && delivered.getCount() > 0; i++) {
				call(http, "POST", base + "/Observation", """
						{"resourceType":"Observation","status":"final","subject":{"reference":"Patient/train-1"},
						 "code":{"coding":[{"system":"http://loinc.org","code":"2986-8"}]}}""");
				delivered.await(1, TimeUnit.SECONDS);
			}
			System.out.printf("training: rest-hook delivered: %s%n", delivered.getCount() == 0);
			call(http, "DELETE", base + "/Subscription/train-1", null);
		} finally {
			receiver.stop(0);
		}
	}

	private static void call(HttpClient http, String method, String url, String body) throws Exception {
		HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(url))
				.timeout(Duration.ofMinutes(2))
				.header("Accept", "application/fhir+json");
		if (body == null) {
			req.method(method, HttpRequest.BodyPublishers.noBody());
		} else {
			req.header("Content-Type", "application/fhir+json");
			req.method(method, HttpRequest.BodyPublishers.ofString(body));
		}
		int status = http.send(req.build(), HttpResponse.BodyHandlers.discarding()).statusCode();
		System.out.printf("training: %s %s -> %d%n", method, url.substring(url.indexOf("/fhir")), status);
	}
}
