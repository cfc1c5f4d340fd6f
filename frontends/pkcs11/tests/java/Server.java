// A JSSE server whose keys are in the keyless PKCS#11 module, loaded by
// OpenJDK's own SunPKCS11 provider: it lists the key store, then answers
// one TLS connection. Arguments: the SunPKCS11 configuration file, a port.
import java.io.OutputStream;
import java.net.InetAddress;
import java.security.KeyStore;
import java.security.Provider;
import java.security.Security;
import java.util.Collections;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;

public class Server {
    public static void main(String[] args) throws Exception {
        Provider provider = Security.getProvider("SunPKCS11").configure(args[0]);
        Security.addProvider(provider);
        KeyStore keys = KeyStore.getInstance("PKCS11", provider);
        keys.load(null, new char[0]);
        for (String alias : Collections.list(keys.aliases())) {
            System.out.println("alias " + alias + " key=" + keys.isKeyEntry(alias)
                + " cert=" + (keys.getCertificate(alias) != null));
        }
        KeyManagerFactory factory = KeyManagerFactory.getInstance("NewSunX509");
        factory.init(keys, new char[0]);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(factory.getKeyManagers(), null, null);
        SSLServerSocket listener = (SSLServerSocket) context.getServerSocketFactory()
            .createServerSocket(Integer.parseInt(args[1]), 8, InetAddress.getLoopbackAddress());
        System.out.println("listening");
        System.out.flush();
        for (int i = 0; i < Integer.parseInt(args[2]); i++) {
            try (SSLSocket socket = (SSLSocket) listener.accept()) {
                socket.startHandshake();
                OutputStream out = socket.getOutputStream();
                out.write("hello from java\n".getBytes());
                out.flush();
            } catch (Exception e) {
                System.out.println("connection failed: " + e);
            }
        }
    }
}
